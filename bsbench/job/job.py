"""What one Hydra job does: type its config, run it (in its own DDP ranks where it needs several
processes), and record the outcome. (A resumed sweep's finished jobs never get here: bsbench's
sweeper drops them before launch, bsbench.job.sweep.)

A job's outcome is always a result on disk: ok, oom (out of memory: a finding, the sweep goes on),
failed (the sweep goes on and exits non-zero at the end) or interrupted (the sweep stops, keeping
what finished). Only a user's mistake ends a job without one: one line and exit status 2.
"""

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
from bsbench.core.results import RESULT_FILE, to_json, write_json_atomic
from bsbench.job import noise
from bsbench.job.console import LOG_ONLY, route_library_output, sweep_progress
from bsbench.job.identity import job_id
from bsbench.job.record import unfinished
from bsbench.modes import mode_of, results_of

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
        os.environ.setdefault("WANDB_SILENT", "true")  # logger=wandb's banners, per job (docs/getting-started.md says where runs go)
    # torch and Lightning: only when a job runs
    from bsbench.job.ranks import cluster_rank, processes_to_start, run_ranks, settle_cluster_rank, slurm_job_id
    from bsbench.job.fit import job_flops, with_utilization
    from bsbench.job.run import attempt

    record = {"run_dir": str(run_dir), "overrides": overrides, "sweep_position": position, "job_id": job_id(cfg),
              "slurm_job_id": slurm_job_id()}
    ranked = cluster_rank()  # SLURM started this job's ranks: each rank runs this function
    interrupt.install()  # from here on, a stop is recorded
    watch = noise.Watch().start()  # how busy the machine is, apart from this job, while it runs
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
        # a mistake found only once the job ran (what planning could not look at): the job's folder
        # still gets its result, and its log the sentence
        log.error("%s", err, extra={LOG_ONLY: True})
        if not ranked or ranked[0] == 0:
            _record({**unfinished(cfg, Status.FAILED, err), **record}, None)
        fail(err)
    except KeyboardInterrupt:
        stopped = {**unfinished(cfg, Status.INTERRUPTED), "error_type": "Interrupted", "error": interrupt.reason(),
                   **record}
        if ranked:  # another rank's failure, where one failed first, is what ended the job
            stopped = settle_cluster_rank(stopped, run_dir, ranked[0])
            if stopped is None:
                sys.exit(130)
        for one in results_of(stopped):
            _record(with_utilization(cfg, one), sweep_dir)
        where = sweep_dir or run_dir
        if multirun and not record["slurm_job_id"]:  # on SLURM, the submitting process reports when all ended
            from bsbench.report.write import write_report

            write_report([where])
        resumable = multirun or mode_of(cfg.mode).resumes_single_run
        print(f"\nbsbench: {stopped['status']}; finished results are kept in {where}"
              + (f"; resume with resume={where}" + ("" if multirun else " and the same command") if resumable else ""),
              file=sys.stderr, flush=True)
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
    whole = {**result, **record, **watch.stop()}
    # mode=compare: one per arm; failed, out of memory, compared: every result has the FLOP fields
    written = [{**one, **noise.judge(one)} for one in results_of(whole)]
    written = [one if "train_flops_per_sample" in one else with_utilization(cfg, one) for one in written]
    for one in written:  # a failed write prints every result of the job, so no compared batch size is lost
        _record(one, sweep_dir, written)
    progress = sweep_progress(position) if multirun else None
    mode = mode_of(cfg.mode)
    line = mode.line(whole, progress)
    log.info("%s", line if multirun else f"{line}; result in {run_dir}")
    for one in written:
        noise.warn_once(one, line.split(": ", 1)[0] if multirun else "this run")
    if mode.reports_single_run and not multirun and result["status"] == Status.OK:
        from bsbench.report.write import write_report  # a compare run is a sweep's worth: its report

        try:
            print("\n" + write_report([run_dir])[0], flush=True)
        except KeyboardInterrupt:  # the run is done and written: only its report is left
            print(f"\nbsbench: interrupted while the report was written; the results are kept in {run_dir}; "
                  f"`bsbench-report {run_dir}` writes the report again.", file=sys.stderr, flush=True)
            sys.exit(130)
    if (result["status"] == Status.FAILED and not multirun) or rank_failed:
        sys.exit(1)


def _record(result: dict, sweep_dir: str | None, every: list[dict] | None = None) -> None:
    path = Path(result["run_dir"]) / RESULT_FILE
    try:
        path.parent.mkdir(parents=True, exist_ok=True)  # a compared batch size's own folder
        write_json_atomic(path, result)
    except OSError as exc:
        stop_on_write_error(exc, every or [result], sweep_dir)
    log.info("result: %s", path, extra={LOG_ONLY: True})


def stop_on_write_error(exc: OSError, results: list[dict], sweep_dir: str | None) -> None:
    """A write failed (a full disk, a read-only one): the job's finished results, which now exist
    nowhere else, go to the terminal and the log as JSON (one object, or a list of a compare job's
    arms, each as its results.json would have been); the sweep stops with one line naming the path
    and the error; the report of what is on disk is written where it can be; no zero-byte file stays."""
    from bsbench.job.sweep import remove_empty_files

    where = exc.filename or (results[0]["run_dir"] if results else sweep_dir)
    if results:
        text = to_json(results[0] if len(results) == 1 else results)
        print(text, file=sys.stderr, flush=True)
        log.error("the result that could not be written: %s", text, extra={LOG_ONLY: True})  # stderr has it
    for directory in filter(None, [*(r.get("run_dir") for r in results), sweep_dir]):
        remove_empty_files(Path(directory))
    reported = ""
    if sweep_dir:
        from bsbench.report.write import ReportNotWritten, write_report

        try:
            write_report([Path(sweep_dir)])
            reported = f" the report of the runs on disk is in {sweep_dir};"
        except (OSError, ReportNotWritten):
            reported = " the report could not be written either;"
    kept = (" the result above is its only copy;" if len(results) == 1 else
            " the results above are their only copy;" if results else "")
    resume = f" free space and resume with resume={sweep_dir}." if sweep_dir else " free space and run it again."
    stops = "the sweep stops here" if sweep_dir else "the run stops"
    print(f"bsbench: error: could not write {where} ({exc.strerror or exc}); {stops};{kept}{reported}"
          f"{resume}", file=sys.stderr, flush=True)
    sys.exit(1)
