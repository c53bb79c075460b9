"""hydra/launcher=slurm (conf/hydra/launcher/slurm.yaml): each job of a sweep a SLURM job, submitted
through submitit (pip install "bsbench[slurm]"), with what a benchmark needs around it (bsbench.job.slurm):
every job ends in a result, whatever SLURM did to it; one line per job as it ends; Ctrl-C cancels
the sweep's jobs.

Hydra imports every module of hydra_plugins when any Hydra app starts: this one imports Hydra alone,
submitit and bsbench only when a sweep is launched, so a missing extra is named by bsbench's sweeper
in one line instead of failing here."""

from typing import Any, Sequence

from hydra.core.utils import JobReturn
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf


class BsbenchSlurmLauncher(Launcher):
    def __init__(self, **params: Any) -> None:
        self.params = {k: OmegaConf.to_container(v, resolve=True) if OmegaConf.is_config(v) else v
                       for k, v in params.items()}
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None
        self.task_function: TaskFunction | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config, self.hydra_context, self.task_function = config, hydra_context, task_function

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from bsbench.core.errors import UserError, fail
        from bsbench.job.slurm import launch

        try:
            return launch(self, job_overrides, initial_job_idx)
        except UserError as err:
            fail(err)
