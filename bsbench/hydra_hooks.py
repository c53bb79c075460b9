"""bsbench's hooks into Hydra's own life cycle (hydra.callbacks in conf/config.yaml): check the config
before Hydra creates any directory, and summarize a sweep when it ends."""

import sys
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from bsbench.errors import UserError
from bsbench.report import write_report
from bsbench.validate import check_output_root, validate, validate_sweep


def fail(err: UserError) -> None:
    """A user's mistake: one line on stderr, exit status 2, nothing written."""
    print(f"bsbench: error: {err}", file=sys.stderr, flush=True)
    sys.exit(2)


class Preflight(Callback):
    """Stops a bad command line before Hydra creates directories. A single run is checked whole; the
    jobs of a sweep are checked each by bsbench's sweeper once their values are known."""

    def on_run_start(self, config: DictConfig, **kwargs) -> None:
        self._check(config, validate)

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        self._check(config, validate_sweep)

    @staticmethod
    def _check(config: DictConfig, check) -> None:
        try:
            check_output_root(config.output_root)
            check(config)
        except UserError as err:
            fail(err)


class SweepReport(Callback):
    """When a multirun ends: write its report (tables, verdict, plots) into the sweep directory, print
    it, and exit non-zero if any run failed (out-of-memory runs are results, not failures)."""

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        text, results = write_report([Path(config.hydra.sweep.dir)])
        print("\n" + text, flush=True)
        failed = [r for r in results if r.get("status") not in ("ok", "oom")]
        if failed:
            print(f"bsbench: {len(failed)} of {len(results)} runs did not finish; see the table above.",
                  file=sys.stderr, flush=True)
            sys.exit(1)
