"""What one Hydra job does: type its config, run it (in its own DDP ranks where it needs several
processes), and record the outcome. (A resumed sweep's finished jobs never get here: bsbench's
sweeper drops them before launch, bsbench.job.sweep.)

A job's outcome is always a result on disk: ok, oom (out of memory: a finding, the sweep goes on),
failed (the sweep goes on and exits non-zero at the end) or interrupted (the sweep stops, keeping
what finished). Only a user's mistake ends a job without one: one line and exit status 2.
"""

import json
import logging
import os
import sys
import time
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from bsbench.core import interrupt
from bsbench.core.config import typed
from bsbench.core.errors import UserError, fail
from bsbench.core.fields import Status
from bsbench.core.identity import job_id
from bsbench.core.results import RESULT_FILE, per_batch_size, unfinished, write_json_atomic
from bsbench.job.console import LOG_ONLY, route_library_output, sweep_progress

log = logging.getLogger("bsbench")


def run_job(cfg: DictConfig) -> None:
    hydra_cfg = HydraConfig.get()
    try:
        cfg = typed(cfg)
    except UserError as err:
        fail(err)
    run_dir = Path(hydra_cfg.runtime.output_dir)
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    overrides = [o for o in hydra_cfg.overrides.task if not o.startswith("resume=")]
    position = hydra_cfg.job.num if multirun else None  # the sweeper's order: which job ran when
    sweep_dir = hydra_cfg.sweep.dir if multirun else None
    route_library_output()
    if not cfg.verbose:
        os.environ.setdefault("WANDB_SILENT", "true")  # logger=wandb's banners, per job (the README says where runs go)
    # torch and Lightning: only when a job runs
    from bsbench.job.ranks import cluster_rank, processes_to_start, run_ranks, settle_cluster_rank, slurm_job_id
    from bsbench.job.run import attempt, job_flops, with_utilization

    record = {"run_dir": str(run_dir), "overrides": overrides, "sweep_position": position, "job_id": job_id(cfg),
              "slurm_job_id": slurm_job_id()}
    ranked = cluster_rank()  # SLURM started this job's ranks: each rank runs this function
    interrupt.install()  # from here on, a stop is recorded
    try:
        interrupt.check()
        # counted before the run, so that recording an interrupted or failed run needs no second of counting
        job_flops(cfg)
        if multirun and hydra_cfg.job.num > 0 and cfg.cooldown_s:
            log.info("cooling down for %s s", cfg.cooldown_s)
            time.sleep(cfg.cooldown_s)
        processes = 0 if ranked else processes_to_start(cfg)
        result = run_ranks(cfg, run_dir, processes) if processes else attempt(cfg)
    except UserError as err:
        fail(err)
    except KeyboardInterrupt:
        stopped = {**unfinished(cfg, Status.INTERRUPTED), "error_type": "Interrupted", "error": interrupt.reason(),
                   **record}
        if ranked:  # another rank's failure, where one failed first, is what ended the job
            stopped = settle_cluster_rank(stopped, run_dir, ranked[0])
            if stopped is None:
                sys.exit(130)
        for one in per_batch_size(stopped):
            _record(with_utilization(cfg, one), sweep_dir)
        where = sweep_dir or run_dir
        if multirun and not record["slurm_job_id"]:  # on SLURM, the submitting process reports when all ended
            from bsbench.report.write import write_report

            write_report([where])
        print(f"\nbsbench: {stopped['status']}; finished results are kept in {where}"
              + (f"; resume with resume={where}" if multirun else ""), file=sys.stderr, flush=True)
        sys.exit(130)
    # SLURM's ranks: one that did not finish ends its task with an error, so that srun stops the others
    # (--kill-on-bad-exit) instead of leaving them in a collective; rank 0 records the job's outcome
    rank_failed = bool(ranked) and result is not None and result["status"] != Status.OK
    if ranked:
        result = settle_cluster_rank(None if result is None else {**result, **record}, run_dir, ranked[0])
    if result is None:  # not global rank 0
        if rank_failed:
            sys.exit(1)
        return
    whole = {**result, **record}
    for one in per_batch_size(whole):  # mode=compare: one per batch size
        # failed, out of memory, compared: every result has the FLOP fields; a failed write prints the
        # whole job's result, so no compared batch size is lost
        _record(one if "train_flops_per_sample" in one else with_utilization(cfg, one), sweep_dir, whole)
    progress = sweep_progress(position) if multirun else None
    line = (_compare_line if cfg.mode == "compare" else one_line)(whole, progress)
    log.info("%s", line if multirun else f"{line}; result in {run_dir}")
    if cfg.mode == "compare" and not multirun and result["status"] == Status.OK:
        from bsbench.report.write import write_report  # a compare run is a sweep's worth: its report

        print("\n" + write_report([run_dir])[0], flush=True)
    if (result["status"] == Status.FAILED and not multirun) or rank_failed:
        sys.exit(1)


def _record(result: dict, sweep_dir: str | None, whole: dict | None = None) -> None:
    path = Path(result["run_dir"]) / RESULT_FILE
    try:
        path.parent.mkdir(parents=True, exist_ok=True)  # a compared batch size's own folder
        write_json_atomic(path, result)
    except OSError as exc:
        stop_on_write_error(exc, whole or result, sweep_dir)
    log.info("result: %s", path, extra={LOG_ONLY: True})


def stop_on_write_error(exc: OSError, result: dict | None, sweep_dir: str | None) -> None:
    """A write failed (a full disk, a read-only one): the finished result, which now exists nowhere
    else, goes to the terminal and the log as JSON; the sweep stops with one line naming the path
    and the error; the report of what is on disk is written where it can be; no zero-byte file stays."""
    from bsbench.job.sweep import remove_empty_files

    where = exc.filename or (result or {}).get("run_dir") or sweep_dir
    if result is not None:
        text = json.dumps(result, default=str)
        print(text, file=sys.stderr, flush=True)
        log.error("the result that could not be written: %s", text)
    for directory in filter(None, [(result or {}).get("run_dir"), sweep_dir]):
        remove_empty_files(Path(directory))
    reported = ""
    if sweep_dir:
        from bsbench.report.write import write_report

        try:
            write_report([Path(sweep_dir)])
            reported = f" the report of the runs on disk is in {sweep_dir};"
        except OSError:
            reported = " the report could not be written either;"
    kept = " the result above is its only copy;" if result is not None else ""
    resume = f" free space and resume with resume={sweep_dir}." if sweep_dir else " free space and run it again."
    print(f"bsbench: error: could not write {where} ({exc.strerror or exc}); the sweep stops here;{kept}{reported}"
          f"{resume}", file=sys.stderr, flush=True)
    sys.exit(1)


def _model(r: dict) -> str:
    """The architecture, on the line of a job whose command chose it (a sweep over architectures)."""
    chosen = any(o.split("=", 1)[0].lstrip("+~") in ("model", "model.arch") for o in r.get("overrides") or [])
    return f" model={r['model']}" if chosen else ""


def _compare_line(r: dict, progress: tuple[str, str] | None) -> str:
    """A compare job's line: each batch size's rate, each comparison with its interval, what ended it."""
    from bsbench.report.stats import half_width, paired
    from bsbench.report.verdict import neighbour_pairs

    sizes = r["config"]["compare"]["batch_sizes"]
    setup = f"compare {', '.join(map(str, sizes))}{_model(r)} precision={r.get('precision_used') or r['precision']}"
    if (r.get("world_size") or 1) > 1:
        setup += f" world_size={r['world_size']}"
    if r["status"] != Status.OK:
        figures = str(r["status"]) + (f" ({r['error_type']}: {r['error']})" if "error" in r else "")
    else:
        arms = {arm["batch_size"]: arm for arm in r["arms"]}
        shown = ", ".join(f"{b}: {arm['train_samples_per_s']:.0f}" for b, arm in arms.items()) + " samples/s"
        for b, n in neighbour_pairs(arms):
            c = paired(arms[b]["round_samples_per_s"], arms[n]["round_samples_per_s"])
            width = half_width(c)
            shown += f"; {b} vs {n} {c['ratio']:+.1%}" + (f" (±{width:.1%})" if width is not None else "")
        stop = r["compare_stop"]
        shown += f"; {stop['rounds']} rounds, " + {"target_ci": "on target", "budget_min": "budget spent",
                                                    "cap": "all rounds"}[stop["stop"]]
        figures = shown
    line = f"{setup}: {figures}"
    return f"{progress[0]}: {line} ({progress[1]})" if progress else line


def one_line(r: dict, progress: tuple[str, str] | None) -> str:
    """A job's line on the terminal: where the sweep is, what the job was, its headline figures."""
    setup = f"batch_size={r['batch_size']}{_model(r)} precision={r.get('precision_used') or r['precision']}"
    if (r.get("world_size") or 1) > 1:
        setup += f" world_size={r['world_size']}"
    if r.get("repeat"):
        setup += f" repeat={r['repeat']}"
    if r["mode"] == "find_max" and "find_max_stop" in r:
        largest = r["max_batch_size"] or "none (1 did not fit)"
        figures = f"largest batch size that ran: {largest} (the search ended at: {r['find_max_stop']})"
    elif r["status"] != Status.OK:
        figures = str(r["status"]) + (f" ({r['error_type']}: {r['error']})" if "error" in r else "")
    else:
        inference = r["mode"] == "inference"
        figures_ = (("inference_samples_per_s", ".0f", " samples/s"), ("latency_median_ms", ".4g", " ms per batch"),
                    ("latency_p95_ms", ".4g", " ms p95")) if inference else (
            ("train_samples_per_s", ".0f", " samples/s"), ("train_time_s", ".1f", " s train"),
            ("inference_time_s", ".1f", " s inference"), ("test_acc", ".3f", " test acc"))
        shown = [f"{r[key]:{fmt}}{unit}" for key, fmt, unit in figures_ if r.get(key) is not None]
        mfu = r.get("inference_mfu" if inference else "mfu")
        if mfu is not None:
            shown.append(f"MFU {100 * mfu:.1f}%")
        if r.get("profile_top"):  # mode=profile: where the step's time went
            top = ", ".join(f"{op['name'][:60]} {op['share']:.0%}" for op in r["profile_top"][:3])
            count = r["profile_count"]
            shown = [f"{count} profile{'s' if count > 1 else ''}; most of the step: {top}"]
        figures = ", ".join(shown) or "no figures"
    line = f"{setup}: {figures}"
    return f"{progress[0]}: {line} ({progress[1]})" if progress else line
