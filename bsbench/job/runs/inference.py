"""mode=inference's run (bsbench.modes.inference): eval-mode forward passes on the test images cycled into
full batches, each timed on its own (bsbench.training.timing)."""

from omegaconf import DictConfig

from bsbench.job.build import build
from bsbench.job.fit import lightning_call, result


def run(cfg: DictConfig, started_at: str) -> dict | None:
    built = build(cfg)
    trainer = built.trainer
    lightning_call(trainer, trainer.predict, built.model, datamodule=built.datamodule, return_predictions=False)
    built.timing.collect(trainer)
    measured = {**built.timing.inference_metrics(), "inference_world_size": trainer.world_size}
    return result(cfg, built, measured, started_at)
