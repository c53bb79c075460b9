"""Hydra's basic sweeper with bsbench's two additions: every job's config is typed and checked before
the sweep directory is made or any job starts (so `-m batch_size=0,256` fails at once, not after
hours of other runs), and the jobs run `repeats` times each in a fair order (bsbench.core.order).

Hydra only loads sweepers from the hydra_plugins package, and it imports every module there when any
Hydra app starts: this one imports Hydra alone, and bsbench's checks (torch, torchvision, Lightning)
only when a bsbench sweep runs."""

from typing import Sequence

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.types import Override


class BsbenchSweeper(BasicSweeper):
    def split_arguments(self, overrides: list[Override], max_batch_size: int | None) -> list[list[list[str]]]:
        from bsbench.core.order import sweep_order

        (jobs,) = BasicSweeper.split_arguments(overrides, None)
        ordered = sweep_order(jobs, self.config.repeats, self.config.order, self.config.order_seed)
        self._check(ordered)  # before BasicSweeper.sweep makes the sweep directory
        size = max_batch_size or len(ordered) or 1
        return [ordered[i : i + size] for i in range(0, len(ordered), size)]

    def _check(self, jobs: list[list[str]]) -> None:
        from hydra._internal.core_plugins.basic_launcher import BasicLauncher

        from bsbench.core.config import typed
        from bsbench.core.errors import UserError, fail

        here = isinstance(self.launcher, BasicLauncher)  # other launchers run jobs on other machines
        try:
            configs = [typed(self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides)))
                       for overrides in jobs]
            from bsbench.job.validate import validate  # torch: after the types, which need none

            for cfg in configs:
                validate(cfg, here=here)
        except UserError as err:
            fail(err)

    def validate_batch_is_legal(self, batch: Sequence[Sequence[str]]) -> None:
        """Every job was composed and checked in split_arguments already."""
