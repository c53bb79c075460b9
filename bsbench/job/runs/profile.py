"""mode=profile's run (bsbench.modes.profile): training with torch.profiler over steady-state steps
(bsbench.training.profiling), one trace per profile in the job's folder."""

import os
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from bsbench.job.fit import train
from bsbench.training.profiling import TRACE_DIR, ProfileCallback


def run(cfg: DictConfig, started_at: str) -> dict | None:
    spec = cfg.profile
    root = OmegaConf.to_container(cfg.trainer, resolve=True)["default_root_dir"] or "."
    profiler = ProfileCallback(os.path.join(root, TRACE_DIR), cfg.batch_size, cfg.timing.warmup_steps,
                               spec.warmup, spec.active, spec.repeat, cfg.verbose)  # traces in the run's folder

    def traced(built) -> dict:
        trainer = built.trainer
        return profiler.metrics(Path(trainer.default_root_dir), spec.top) if trainer.is_global_zero else {}

    return train(cfg, started_at, [profiler], after_fit=traced)
