"""Hydra's basic sweeper with bsbench's additions: the jobs run `repeats` times each in a fair order
(bsbench.core.order), and before the sweep directory is made or any job starts, bsbench plans the
sweep (bsbench.job.sweep): every job typed and checked (so `-m batch_size=0,256` fails at once, not
after hours of other runs), the directory claimed for this sweep alone, the jobs a resumed sweep
already ran dropped, and every job's folder named after what it is.

Hydra only loads sweepers from the hydra_plugins package, and it imports every module there when any
Hydra app starts: this one imports Hydra alone, and bsbench (torch, torchvision, Lightning) only when
a bsbench sweep runs."""

from pathlib import Path
from typing import Any, Sequence

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.types import Override
from hydra.types import HydraContext


def _round(job: list[str]) -> int:
    """The round a planned job belongs to: its repeat (bsbench.core.order.sweep_order adds it)."""
    return int([o for o in job if o.startswith("repeat=")][-1].split("=", 1)[1])


def _slurm(config) -> bool:
    """hydra/launcher=slurm: bsbench's SLURM launcher (hydra_plugins/bsbench_launcher)."""
    return str(config.hydra.launcher.get("_target_", "")).startswith("hydra_plugins.bsbench_launcher.")


def _missing_slurm_extra(config) -> bool:
    """hydra/launcher=slurm chosen without hydra-submitit-launcher (and submitit) installed."""
    import importlib.util

    if not _slurm(config):
        return False
    try:
        return any(importlib.util.find_spec(name) is None
                   for name in ("submitit", "hydra_plugins.hydra_submitit_launcher.submitit_launcher"))
    except ImportError:
        return True


class BsbenchSweeper(BasicSweeper):
    def setup(self, *, hydra_context, task_function, config) -> None:
        if _missing_slurm_extra(config):
            from bsbench.core.errors import UserError, fail

            fail(UserError('hydra/launcher=slurm needs the slurm extra: pip install "bsbench[slurm]" '
                           "(hydra-submitit-launcher), then run the sweep again."))
        super().setup(hydra_context=hydra_context, task_function=task_function, config=config)

    def split_arguments(self, overrides: list[Override], max_batch_size: int | None) -> list[list[list[str]]]:
        from hydra._internal.core_plugins.basic_launcher import BasicLauncher

        from bsbench.core.errors import UserError, fail
        from bsbench.core.order import sweep_order
        from bsbench.job.sweep import PlannedLoader, Stopper, composer, plan

        (jobs,) = BasicSweeper.split_arguments(overrides, None)
        ordered = sweep_order(jobs, self.config.repeats, self.config.order, self.config.order_seed)
        loader = self.hydra_context.config_loader
        compose = composer(lambda o: loader.load_sweep_config(self.config, o))
        here = isinstance(self.launcher, BasicLauncher)  # the other launchers run jobs on other machines
        try:
            planned = plan(self.config, compose, here=here, jobs=ordered)
            if here:  # Hydra's launcher takes each job's config from the plan's compositions
                self.launcher.hydra_context = HydraContext(config_loader=PlannedLoader(loader, compose),
                                                           callbacks=self.launcher.hydra_context.callbacks)
            if type(self.launcher).__module__.startswith("hydra_plugins.hydra_submitit_launcher") and \
                    type(self.launcher).__name__ == "LocalLauncher":
                import logging

                logging.getLogger("bsbench").warning(
                    "hydra/launcher=submitit_local runs the sweep's jobs at the same time on this machine: their "
                    "timings share its cores and devices; run without it for figures to compare")
            if self.config.resume and _slurm(self.config):
                from bsbench.job.slurm import refuse_if_running

                refuse_if_running(self.config)
        except UserError as err:
            fail(err)
        except KeyboardInterrupt:  # Ctrl-C or SIGTERM while the sweep is planned: nothing ran
            from bsbench.job.hooks import stopped_outside_a_job

            stopped_outside_a_job(self.config.hydra.sweep.dir, fresh=not self.config.get("resume"))
        self._stopper, self._round_ends, self._checked = None, [], set()
        size = max_batch_size or len(planned) or 1
        if not Stopper.active(self.config):
            return [planned[i : i + size] for i in range(0, len(planned), size)]
        # adaptive stopping: a round never shares a batch with the next, and the last batch of each
        # round is where the stopper looks (bsbench.job.sweep.Stopper)
        self._stopper = Stopper(self.config, Path(self.config.hydra.sweep.dir))
        rounds: dict[int, list[list[str]]] = {}
        for job in planned:
            rounds.setdefault(_round(job), []).append(job)
        batches = []
        for round_, jobs in rounds.items():
            chunks = [jobs[i : i + size] for i in range(0, len(jobs), size)]
            batches += chunks
            self._round_ends += [None] * (len(chunks) - 1) + [round_]
        return batches

    def is_done(self) -> bool:
        finished = self.batch_index - 1  # the batch that just ran
        if self._stopper is not None and finished >= 0 and finished not in self._checked:
            self._checked.add(finished)
            round_ = self._round_ends[finished]
            left = sum(len(batch) for batch in self.overrides[self.batch_index :])
            if round_ is not None and self._stopper.after_round(round_, left):
                return True
        return super().is_done()

    def validate_batch_is_legal(self, batch: Sequence[Sequence[str]]) -> None:
        """Every job was composed and checked in split_arguments already."""

    def sweep(self, arguments: list[str]) -> Any:
        try:
            return super().sweep(arguments)
        except KeyboardInterrupt:  # between two jobs (a job's own stop is its result, bsbench.job.job)
            from bsbench.job.hooks import stopped_outside_a_job

            stopped_outside_a_job(self.config.hydra.sweep.dir)
        except OSError as exc:  # Hydra's own files of a job (.hydra/, the log) on a full or read-only disk
            from bsbench.job.job import stop_on_write_error

            stop_on_write_error(exc, None, self.config.hydra.sweep.dir)
