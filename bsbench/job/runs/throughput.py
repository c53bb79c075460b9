"""mode=throughput's run (bsbench.modes.throughput): the training steps, timed, and nothing else."""

from omegaconf import DictConfig

from bsbench.job.fit import train


def run(cfg: DictConfig, started_at: str) -> dict | None:
    return train(cfg, started_at)
