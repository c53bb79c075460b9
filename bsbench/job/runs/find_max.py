"""mode=find_max's run (bsbench.modes.find_max, whose search this is): each trial a fresh run of
`trainer.max_steps` real training steps at the size the search asks for."""

from lightning.pytorch.utilities.memory import garbage_collection_cuda
from omegaconf import DictConfig

from bsbench.core.fields import Status
from bsbench.core.oom import is_oom
from bsbench.core.results import now
from bsbench.job.build import build
from bsbench.job.fit import check_batch, fit, ran, with_utilization
from bsbench.job.record import setup_fields
from bsbench.modes.find_max import find_max
from bsbench.training.environment import describe
from bsbench.training.parts import train_samples


def run(cfg: DictConfig, started_at: str) -> dict | None:
    trained: dict = {}  # what the trials ran on; never a trial's Trainer, which would keep its model in memory

    def run_trial(trial) -> None:
        built = build(trial)
        trained.update(ran(cfg, built.trainer), device=built.trainer.strategy.root_device)
        fit(built)
        built.timing.collect(built.trainer)
        # a trial that fit did so on the batch size it is counted as, not on what a loader made of it
        check_batch(trial.batch_size, built.timing.first_batch_samples, "the search tried")

    found = find_max(cfg, run_trial, train_samples(cfg) or cfg.find_max.max_val, is_oom, garbage_collection_cuda)
    device = trained.pop("device")
    return with_utilization(cfg, {
        "status": Status.OK if found["max_batch_size"] else Status.OOM,
        **setup_fields(cfg),
        **trained,
        **found,
        "started_at": started_at,
        "finished_at": now(),
        **describe(device),
    })
