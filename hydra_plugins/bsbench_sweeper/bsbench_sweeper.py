"""Hydra's basic sweeper with bsbench's two additions: every job's config is checked before the first
job starts (so `-m batch_size=0,256` fails at once, not after hours of other runs), and the jobs run
`repeats` times each in a fair order (bsbench.order). Hydra only loads sweepers from the
hydra_plugins package, hence this module's place."""

from typing import Sequence

from hydra._internal.core_plugins.basic_launcher import BasicLauncher
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.types import Override

from bsbench.errors import UserError
from bsbench.hydra_hooks import fail
from bsbench.order import sweep_order
from bsbench.validate import validate


class BsbenchSweeper(BasicSweeper):
    def split_arguments(self, overrides: list[Override], max_batch_size: int | None) -> list[list[list[str]]]:
        (jobs,) = BasicSweeper.split_arguments(overrides, None)
        ordered = sweep_order(jobs, self.config.repeats, self.config.order, self.config.order_seed)
        size = max_batch_size or len(ordered) or 1
        return [ordered[i : i + size] for i in range(0, len(ordered), size)]

    def validate_batch_is_legal(self, batch: Sequence[Sequence[str]]) -> None:
        here = isinstance(self.launcher, BasicLauncher)  # other launchers run jobs on other machines
        for overrides in batch:
            job_cfg = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
            try:
                validate(job_cfg, here=here)
            except UserError as err:
                fail(err)
