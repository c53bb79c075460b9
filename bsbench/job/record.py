"""What every result of a job holds, finished or not: what was asked for (`setup_fields`), and for a run
that did not finish its status and why (`unfinished`)."""

import traceback

from omegaconf import DictConfig, OmegaConf

from bsbench.core import parts
from bsbench.core.fields import Status
from bsbench.core.results import now


def setup_fields(cfg: DictConfig) -> dict:
    """What was asked for: the fields every result has, finished or not."""
    # torch's side only now: a job's folder records its failure before torch is imported (bsbench.job.job)
    from bsbench.training.parts import image_size

    trainer = cfg.trainer
    config = OmegaConf.to_container(cfg, resolve=True)
    return {
        "mode": cfg.mode,
        "batch_size": cfg.batch_size,
        "precision": str(cfg.precision),
        "devices": config["devices"],
        "strategy": str(cfg.strategy),
        "accelerator": str(cfg.accelerator),
        "epochs": trainer.max_epochs if trainer.max_epochs is not None and trainer.max_epochs > 0 else None,
        "max_steps": trainer.max_steps if trainer.max_steps > 0 else None,
        "model": parts.model_name(cfg),
        "data": parts.data_name(cfg),
        "image_size": image_size(cfg),
        "seed": cfg.seed,
        "repeat": cfg.repeat,
        "resize_on": cfg.data.get("resize_on"),
        "channels_last": cfg.channels_last,
        "cudnn_benchmark": cfg.cudnn_benchmark,
        "compile": cfg.compile,
        "matmul_precision": cfg.matmul_precision,
        "fused_adam": cfg.model.get("fused_adam"),
        "train_acc_eval_forward": cfg.model.get("train_acc_eval_forward"),
        "config": config,
    }


def unfinished(cfg: DictConfig, status: Status, exc: BaseException | None = None) -> dict:
    """The result of a run that did not finish: status oom, failed or interrupted, and why."""
    result = {"status": status, **setup_fields(cfg), "finished_at": now()}
    if exc is not None:
        message = str(exc).strip()
        result.update(
            error_type=type(exc).__name__,
            error=message.splitlines()[0] if message else type(exc).__name__,
            traceback="".join(traceback.format_exception(exc)),
        )
    return result
