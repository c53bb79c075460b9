"""Hydra's basic sweeper, plus bsbench's check of every job's config before the first job starts, so
that `-m batch_size=0,256` fails at once instead of after hours of other runs. Hydra only loads
sweepers from the hydra_plugins package, hence this module's place."""

from typing import Sequence

from hydra._internal.core_plugins.basic_launcher import BasicLauncher
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

from bsbench.errors import UserError
from bsbench.hydra_hooks import fail
from bsbench.validate import validate


class BsbenchSweeper(BasicSweeper):
    def validate_batch_is_legal(self, batch: Sequence[Sequence[str]]) -> None:
        here = isinstance(self.launcher, BasicLauncher)  # other launchers run jobs on other machines
        for overrides in batch:
            job_cfg = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
            try:
                validate(job_cfg, here=here)
            except UserError as err:
                fail(err)
