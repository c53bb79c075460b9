"""The Hydra entry point: `python -m bsbench [overrides]` and the `bsbench` console script.

A job's outcome is always a result on disk: ok, oom (out of memory: a finding, the sweep goes on),
failed (the sweep goes on and exits non-zero at the end) or interrupted (the sweep stops, keeping
what finished). Only a user's mistake ends a job without one: one line and exit status 2.
"""

import logging
import signal
import sys
import time
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from bsbench.errors import UserError
from bsbench.hydra_hooks import fail
from bsbench.ranks import processes_to_start, run_ranks
from bsbench.result import RESULT_FILE, finished_runs, unfinished, write_json_atomic
from bsbench.run import attempt
from bsbench.report import write_report

log = logging.getLogger("bsbench")

# resume=DIR makes DIR the sweep directory; otherwise a new dated one.
OmegaConf.register_new_resolver("bsbench_sweep_dir", lambda resume, new: resume or new, replace=True)


def config_dir() -> str:
    """conf/ inside the installed package (a wheel carries it there), else the repository's conf/
    beside the package (an editable install, or running from the project root)."""
    here = Path(__file__).resolve().parent
    packaged = here / "conf"
    return str(packaged if packaged.is_dir() else here.parent / "conf")


def _sigterm_as_interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


@hydra.main(config_path=config_dir(), config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    overrides = [o for o in hydra_cfg.overrides.task if not o.startswith("resume=")]
    position = hydra_cfg.job.num if multirun else None  # the sweeper's order: which job ran when
    if multirun and cfg.resume:
        done = finished_runs(hydra_cfg.sweep.dir).get(tuple(sorted(overrides)))
        if done:
            log.info("%s: already done in %s, skipped", " ".join(overrides), done["run_dir"])
            return
    signal.signal(signal.SIGTERM, _sigterm_as_interrupt)
    try:
        if multirun and hydra_cfg.job.num > 0 and cfg.cooldown_s:
            log.info("cooling down for %s s", cfg.cooldown_s)
            time.sleep(cfg.cooldown_s)
        processes = processes_to_start(cfg)
        result = run_ranks(cfg, run_dir, processes) if processes else attempt(cfg)
    except UserError as err:
        fail(err)
    except KeyboardInterrupt:
        _record(unfinished(cfg, "interrupted"), run_dir, overrides, position)
        where = hydra_cfg.sweep.dir if multirun else run_dir
        if multirun:
            write_report([where])
        print(f"\nbsbench: interrupted; finished results are kept in {where}"
              + (f"; resume with resume={where}" if multirun else ""), file=sys.stderr, flush=True)
        sys.exit(130)
    if result is None:  # not global rank 0
        return
    _record(result, run_dir, overrides, position)
    if result["status"] == "failed" and not multirun:
        sys.exit(1)


def _record(result: dict, run_dir: Path, overrides: list[str], position: int | None) -> None:
    result.update(run_dir=str(run_dir), overrides=overrides, sweep_position=position)
    write_json_atomic(run_dir / RESULT_FILE, result)
    log.info("%s -> %s", _one_line(result), run_dir / RESULT_FILE)


def _one_line(r: dict) -> str:
    setup = f"batch_size={r['batch_size']} precision={r.get('precision_used', r['precision'])}"
    if r["status"] != "ok":
        return f"{setup}: {r['status']}" + (f" ({r['error_type']}: {r['error']})" if "error" in r else "")
    if r["mode"] == "find_max":
        return f"{setup}: largest batch size that fits: {r['max_batch_size']}"

    def shown(key, fmt):
        return format(r[key], fmt) if r.get(key) is not None else "n/a"

    return (f"{setup}: train {shown('train_time_s', '.1f')} s, inference {shown('inference_time_s', '.1f')} s, "
            f"{shown('train_samples_per_s', '.0f')} samples/s, test acc {shown('test_acc', '.3f')}")


if __name__ == "__main__":
    main()
