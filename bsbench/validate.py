"""Checks on the composed config, before any data or model is loaded: a mistake on the command line
should cost one sentence, not a traceback after the dataset has been read."""

from typing import get_args

import torch
import torchvision
from lightning.fabric.connector import _PRECISION_INPUT
from omegaconf import DictConfig

from bsbench.data import DATASETS
from bsbench.errors import UserError


def _flatten(t) -> tuple:
    args = get_args(t)
    return sum((_flatten(a) for a in args), ()) if args else (t,)


# Every value Lightning's Trainer accepts for `precision`, read from Lightning itself.
PRECISIONS = tuple(str(p) for p in _flatten(_PRECISION_INPUT))
GPU_ACCELERATORS = ("gpu", "cuda")


def _positive_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def validate(cfg: DictConfig) -> None:
    if not _positive_int(cfg.batch_size):
        raise UserError(f"batch_size={cfg.batch_size} is not a positive integer; use e.g. batch_size=256.")
    if not _positive_int(cfg.epochs):
        raise UserError(f"epochs={cfg.epochs} is not a positive integer; use e.g. epochs=10.")
    if str(cfg.precision) not in PRECISIONS:
        raise UserError(f"precision={cfg.precision} is not a Lightning precision; use one of: {', '.join(PRECISIONS)}.")
    _check_devices(cfg.accelerator, cfg.devices)
    if cfg.data.name not in DATASETS:
        raise UserError(f"data={cfg.data.name} is not a dataset bsbench knows; use one of: {', '.join(DATASETS)}.")
    models = torchvision.models.list_models(module=torchvision.models)
    if cfg.model.arch not in models:
        raise UserError(
            f"model.arch={cfg.model.arch} is not a torchvision classification model; "
            "use e.g. mobilenet_v3_large, mobilenet_v3_small or resnet18."
        )
    train_images = (cfg.data.get("num_train_images") or 50000) - cfg.data.val_size
    if cfg.batch_size > train_images:
        raise UserError(
            f"batch_size={cfg.batch_size} is larger than the {train_images} training images, so no full "
            f"batch exists (the last incomplete batch is dropped, as in the reference); use at most {train_images}."
        )


def _check_devices(accelerator: str, devices) -> None:
    if devices == "auto" or devices == -1 or isinstance(devices, (list, str)):
        return  # Lightning resolves these itself, and explains its own errors
    if not _positive_int(devices):
        raise UserError(f"devices={devices} is not a positive integer; use e.g. devices=1, or devices=auto.")
    gpus = torch.cuda.device_count()
    if accelerator in GPU_ACCELERATORS and gpus == 0:
        raise UserError(
            f"accelerator={accelerator} but this machine has no CUDA GPU visible; use accelerator=cpu or accelerator=auto."
        )
    if (accelerator in GPU_ACCELERATORS or (accelerator == "auto" and gpus)) and devices > gpus:
        raise UserError(f"devices={devices} but this machine has {gpus} CUDA GPU(s); use devices={gpus} or fewer.")
