"""bsbench's hooks into Hydra's own life cycle (hydra.callbacks in conf/config.yaml): check the config
before Hydra creates any directory, and summarize a sweep when it ends. Hydra instantiates these at
the start of every run, so the checks and the report are imported only when called."""

import sys
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from bsbench.core.errors import UserError, fail
from bsbench.core.fields import ANSWERED


def check(config: DictConfig, sweep: bool) -> DictConfig:
    """The config typed and checked, or a UserError naming the first setting that cannot work. A sweep's
    own settings are checked here, its jobs each by bsbench's sweeper once their values are known."""
    from bsbench.core.config import typed

    cfg = typed(config)  # before importing the checks, which import torch: a wrong type costs no second
    from bsbench.job.validate import check_output_root, validate, validate_sweep

    (validate_sweep if sweep else validate)(cfg)
    check_output_root(cfg.output_root)
    if cfg.resume and not sweep:
        from bsbench.modes import mode_of

        if not mode_of(cfg.mode).resumes_single_run:
            raise UserError(f"resume={cfg.resume} finishes a sweep; run the sweep's own command, with -m.")
        from bsbench.job.sweep import check_resumable_run

        check_resumable_run(cfg.resume, cfg.mode)
        mode_of(cfg.mode).check_resume(cfg, cfg.resume)
    elif cfg.resume:
        from bsbench.job.sweep import check_resumable

        check_resumable(cfg.resume)
    return cfg


def preflight(config: DictConfig, sweep: bool) -> None:
    """check(), with a mistake ending the process in one line (exit 2)."""
    try:
        check(config, sweep)
    except UserError as err:
        fail(err)


class Preflight(Callback):
    """Stops a bad command line before Hydra creates directories."""

    def on_run_start(self, config: DictConfig, **kwargs) -> None:
        preflight(config, sweep=False)
        from bsbench.job.sweep import claim_run

        try:
            claim_run(config)  # Hydra makes the run's directory after this: the one claimed
        except UserError as err:
            fail(err)

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        preflight(config, sweep=True)


class SweepReport(Callback):
    """When a multirun ends: write its report (tables, verdict, plots) into the sweep directory, print
    it, and exit non-zero if any run failed (out-of-memory runs are results, not failures)."""

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        from bsbench.report.write import write_report

        text, results = write_report([Path(config.hydra.sweep.dir)])
        print("\n" + text, flush=True)
        failed = [r for r in results if r.get("status") not in ANSWERED]
        if failed:
            print(f"bsbench: {len(failed)} of {len(results)} runs did not finish; see the table above; "
                  f"resume={config.hydra.sweep.dir} runs them again.", file=sys.stderr, flush=True)
            sys.exit(1)
