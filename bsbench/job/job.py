"""What one Hydra job does: type its config, skip it when a resumed sweep already holds its result,
run it (in its own DDP ranks where it needs several processes), and record the outcome.

A job's outcome is always a result on disk: ok, oom (out of memory: a finding, the sweep goes on),
failed (the sweep goes on and exits non-zero at the end) or interrupted (the sweep stops, keeping
what finished). Only a user's mistake ends a job without one: one line and exit status 2.
"""

import logging
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
from bsbench.core.results import RESULT_FILE, config_dict, finished_runs, job_key, unfinished, write_json_atomic

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
    if multirun and cfg.resume:
        done = finished_runs(hydra_cfg.sweep.dir).get(job_key(config_dict(cfg)))
        if done:
            log.info("%s: already done in %s, skipped", " ".join(overrides), done["run_dir"])
            return
    interrupt.install()
    from bsbench.job.ranks import processes_to_start, run_ranks  # torch and Lightning: only when a job runs
    from bsbench.job.run import attempt

    try:
        interrupt.check()
        if multirun and hydra_cfg.job.num > 0 and cfg.cooldown_s:
            log.info("cooling down for %s s", cfg.cooldown_s)
            time.sleep(cfg.cooldown_s)
        processes = processes_to_start(cfg)
        result = run_ranks(cfg, run_dir, processes) if processes else attempt(cfg)
    except UserError as err:
        fail(err)
    except KeyboardInterrupt:
        _record(unfinished(cfg, Status.INTERRUPTED), run_dir, overrides, position)
        where = hydra_cfg.sweep.dir if multirun else run_dir
        if multirun:
            from bsbench.report.write import write_report

            write_report([where])
        print(f"\nbsbench: interrupted; finished results are kept in {where}"
              + (f"; resume with resume={where}" if multirun else ""), file=sys.stderr, flush=True)
        sys.exit(130)
    if result is None:  # not global rank 0
        return
    _record(result, run_dir, overrides, position)
    if result["status"] == Status.FAILED and not multirun:
        sys.exit(1)


def _record(result: dict, run_dir: Path, overrides: list[str], position: int | None) -> None:
    result.update(run_dir=str(run_dir), overrides=overrides, sweep_position=position)
    write_json_atomic(run_dir / RESULT_FILE, result)
    log.info("%s -> %s", _one_line(result), run_dir / RESULT_FILE)


def _one_line(r: dict) -> str:
    setup = f"batch_size={r['batch_size']} precision={r.get('precision_used', r['precision'])}"
    if r["mode"] == "find_max" and "find_max_stop" in r:
        largest = r["max_batch_size"] or "none (1 did not fit)"
        return f"{setup}: largest batch size that ran: {largest} (the search ended at: {r['find_max_stop']})"
    if r["status"] != Status.OK:
        return f"{setup}: {r['status']}" + (f" ({r['error_type']}: {r['error']})" if "error" in r else "")

    def shown(key, fmt):
        return format(r[key], fmt) if r.get(key) is not None else "n/a"

    return (f"{setup}: train {shown('train_time_s', '.1f')} s, inference {shown('inference_time_s', '.1f')} s, "
            f"{shown('train_samples_per_s', '.0f')} samples/s, test acc {shown('test_acc', '.3f')}")
