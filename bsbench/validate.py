"""Checks on the composed config, before any data or model is loaded: a mistake on the command line
should cost one sentence, not a traceback after the dataset has been read."""

import functools
import tempfile
from pathlib import Path
from typing import get_args

import torch
import torchvision
from lightning.fabric.connector import _PRECISION_INPUT
from lightning.pytorch.strategies import StrategyRegistry
from omegaconf import DictConfig

from bsbench.data import DATASETS, RESIZE_ON
from bsbench.errors import UserError
from bsbench.order import ORDERS


def _flatten(t) -> tuple:
    args = get_args(t)
    return sum((_flatten(a) for a in args), ()) if args else (t,)


# Every value Lightning's Trainer accepts for `precision` and `strategy`, read from Lightning itself.
PRECISIONS = tuple(str(p) for p in _flatten(_PRECISION_INPUT))
STRATEGIES = ("auto", *StrategyRegistry.available_strategies())
GPU_ACCELERATORS = ("gpu", "cuda")
MODES = ("train", "throughput", "find_max")
MATMUL_PRECISIONS = ("highest", "high", "medium")


def _positive_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def validate_sweep(cfg: DictConfig) -> None:
    """The settings of a sweep as a whole."""
    if not _positive_int(cfg.repeats):
        raise UserError(f"repeats={cfg.repeats} is not a positive integer; use e.g. repeats=3.")
    if cfg.order not in ORDERS:
        raise UserError(f"order={cfg.order} is not a sweep order; use one of: {', '.join(ORDERS)}.")
    if not isinstance(cfg.cooldown_s, (int, float)) or cfg.cooldown_s < 0:
        raise UserError(f"cooldown_s={cfg.cooldown_s} is not a number of seconds; use e.g. cooldown_s=30.")


def validate(cfg: DictConfig, here: bool = True) -> None:
    """Raise UserError naming the first setting that cannot work. `here`: the job runs on this
    machine, so its GPUs can be counted (not so for a sweep sent to a cluster)."""
    if not _positive_int(cfg.batch_size):
        raise UserError(f"batch_size={cfg.batch_size} is not a positive integer; use e.g. batch_size=256.")
    if not _positive_int(cfg.epochs):
        raise UserError(f"epochs={cfg.epochs} is not a positive integer; use e.g. epochs=10.")
    if cfg.mode not in MODES:
        raise UserError(f"mode={cfg.mode} is not a bsbench mode; use one of: {', '.join(MODES)}.")
    if cfg.matmul_precision is not None and cfg.matmul_precision not in MATMUL_PRECISIONS:
        raise UserError(f"matmul_precision={cfg.matmul_precision} is not a float32 matmul precision; "
                        f"use one of: {', '.join(MATMUL_PRECISIONS)}, or null.")
    for key in ("warmup_steps", "steps"):
        value = cfg.throughput[key]
        if not (_positive_int(value) or (key == "warmup_steps" and value == 0)):
            raise UserError(f"throughput.{key}={value} is not a positive integer; use e.g. throughput.{key}=50.")
    max_steps = cfg.trainer.max_steps
    if max_steps != -1 and not _positive_int(max_steps):
        raise UserError(f"trainer.max_steps={max_steps} is not a positive integer; use -1 (no limit) or e.g. 100.")
    if str(cfg.precision) not in PRECISIONS:
        raise UserError(f"precision={cfg.precision} is not a Lightning precision; use one of: {', '.join(PRECISIONS)}.")
    _check_devices(cfg.accelerator, cfg.devices, str(cfg.strategy), here)
    if cfg.data.name not in DATASETS:
        raise UserError(f"data={cfg.data.name} is not a dataset bsbench knows; use one of: {', '.join(DATASETS)}.")
    if cfg.data.resize_on not in RESIZE_ON:
        raise UserError(f"data.resize_on={cfg.data.resize_on} is not a place to resize; use one of: {', '.join(RESIZE_ON)}.")
    resize = cfg.data.resize_size
    if resize is not None and not (_positive_int(resize) and resize >= cfg.data.image_size):
        raise UserError(f"data.resize_size={resize} is smaller than the crop, data.image_size={cfg.data.image_size}; "
                        f"use data.resize_size=null (image_size * 8/7) or at least {cfg.data.image_size}.")
    _check_split(cfg)
    _check_model(cfg.model.arch, cfg.data.image_size)


def _check_devices(accelerator: str, devices, strategy: str, here: bool) -> None:
    if strategy not in STRATEGIES:
        others = [s for s in STRATEGIES if s not in ("auto", "ddp", "ddp_spawn")]
        raise UserError(f"strategy={strategy} is not a Lightning strategy; use auto, ddp, ddp_spawn or one of: "
                        f"{', '.join(others)}.")
    if strategy.startswith("ddp") and accelerator == "mps":
        raise UserError(f"strategy={strategy} cannot run on accelerator=mps (one device, no DDP); use strategy=auto.")
    if devices == "auto" or devices == -1 or isinstance(devices, (list, str)):
        return  # Lightning resolves these itself, and explains its own errors
    if not _positive_int(devices):
        raise UserError(f"devices={devices} is not a positive integer; use e.g. devices=1, or devices=auto.")
    if strategy == "single_device" and devices > 1:
        raise UserError(f"devices={devices} with strategy=single_device runs one device; use devices=1 or strategy=ddp.")
    if not here:
        return
    gpus = torch.cuda.device_count()
    if accelerator in GPU_ACCELERATORS and gpus == 0:
        raise UserError(
            f"accelerator={accelerator} but this machine has no CUDA GPU visible; use accelerator=cpu or accelerator=auto."
        )
    if (accelerator in GPU_ACCELERATORS or (accelerator == "auto" and gpus)) and devices > gpus:
        raise UserError(f"devices={devices} but this machine has {gpus} CUDA GPU(s); use devices={gpus} or fewer.")


def _check_split(cfg: DictConfig) -> None:
    images = cfg.data.get("num_train_images") or 50000  # CIFAR-10's training set
    if not (_positive_int(cfg.data.val_size) and cfg.data.val_size < images):
        raise UserError(f"data.val_size={cfg.data.val_size} must leave training images out of {images}; "
                        "use e.g. data.val_size=5000.")
    train_images = images - cfg.data.val_size
    if cfg.batch_size > train_images:
        raise UserError(
            f"batch_size={cfg.batch_size} is larger than the {train_images} training images, so no full "
            f"batch exists (the last incomplete batch is dropped, as in the reference); use at most {train_images}."
        )


def _check_model(arch: str, image_size) -> None:
    models = torchvision.models.list_models(module=torchvision.models)
    if arch not in models:
        raise UserError(
            f"model.arch={arch} is not a torchvision classification model; "
            "use e.g. mobilenet_v3_large, mobilenet_v3_small or resnet18."
        )
    if not _positive_int(image_size):
        raise UserError(f"data.image_size={image_size} is not a positive integer; use e.g. data.image_size=224.")
    problem = _forward_problem(arch, image_size)
    if problem:
        raise UserError(f"data.image_size={image_size} is too small for model.arch={arch} ({problem}); "
                        "use e.g. data.image_size=224.")


@functools.lru_cache(maxsize=None)
def _forward_problem(arch: str, image_size: int) -> str | None:
    """Try the network on a meta-device batch: shapes are checked, nothing is allocated or computed."""
    try:
        with torch.device("meta"):
            torchvision.models.get_model(arch, weights=None, num_classes=10).eval()(
                torch.empty(2, 3, image_size, image_size)
            )
    except (RuntimeError, ValueError, AssertionError) as exc:
        return str(exc).splitlines()[0].rstrip(".")
    return None


def check_output_root(output_root: str) -> None:
    """Create output_root and write a file into it now, or Hydra fails later with a traceback."""
    try:
        path = Path(output_root).expanduser()
        path.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=path).close()
    except OSError as exc:
        raise UserError(f"output_root={output_root} is not a writable directory ({exc.strerror}); "
                        "use output_root=<a writable directory>.") from None
