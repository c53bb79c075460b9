"""Hydra's basic sweeper with bsbench's additions: the jobs run `repeats` times each in a fair order
(bsbench.core.order), and before the sweep directory is made or any job starts, bsbench plans the
sweep (bsbench.job.sweep): every job typed and checked (so `-m batch_size=0,256` fails at once, not
after hours of other runs), the directory claimed for this sweep alone, the jobs a resumed sweep
already ran dropped, and every job's folder named after what it is.

Hydra only loads sweepers from the hydra_plugins package, and it imports every module there when any
Hydra app starts: this one imports Hydra alone, and bsbench (torch, torchvision, Lightning) only when
a bsbench sweep runs."""

from typing import Any, Sequence

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.types import Override


class BsbenchSweeper(BasicSweeper):
    def split_arguments(self, overrides: list[Override], max_batch_size: int | None) -> list[list[list[str]]]:
        from hydra._internal.core_plugins.basic_launcher import BasicLauncher

        from bsbench.core.errors import UserError, fail
        from bsbench.core.order import sweep_order
        from bsbench.job.sweep import plan

        (jobs,) = BasicSweeper.split_arguments(overrides, None)
        ordered = sweep_order(jobs, self.config.repeats, self.config.order, self.config.order_seed)
        try:
            planned = plan(self.config, lambda o: self.hydra_context.config_loader.load_sweep_config(self.config, o),
                           here=isinstance(self.launcher, BasicLauncher),  # others run jobs on other machines
                           jobs=ordered)
        except UserError as err:
            fail(err)
        size = max_batch_size or len(planned) or 1
        return [planned[i : i + size] for i in range(0, len(planned), size)]

    def validate_batch_is_legal(self, batch: Sequence[Sequence[str]]) -> None:
        """Every job was composed and checked in split_arguments already."""

    def sweep(self, arguments: list[str]) -> Any:
        try:
            return super().sweep(arguments)
        except OSError as exc:  # Hydra's own files of a job (.hydra/, the log) on a full or read-only disk
            from bsbench.job.job import stop_on_write_error

            stop_on_write_error(exc, None, self.config.hydra.sweep.dir)
