"""Checks on the typed config (bsbench.core.config), before any data or model is loaded: a mistake on
the command line should cost one sentence, not a traceback after the dataset has been read. Types
are the schema's job; these are the checks types cannot express."""

import functools
import importlib.util
import os
import shutil
import tempfile
from pathlib import Path
from typing import get_args

import torch
import torchvision
from hydra.utils import get_class
from lightning.fabric.connector import _PRECISION_INPUT
from lightning.pytorch.accelerators import AcceleratorRegistry
from lightning.pytorch.strategies import StrategyRegistry
from omegaconf import DictConfig

from bsbench.core import parts
from bsbench.core.arms import text
from bsbench.core.config import DDP_DEFAULTS, in_range
from bsbench.core.errors import UserError
from bsbench.modes import mode_of
from bsbench.training.data import CIFAR10_CLASSES, DATASETS, RESIZE_ON, ImageDataModule
from bsbench.training.energy import unavailable
from bsbench.training.model import TIMM, network
from bsbench.training.parts import check as check_parts


def _flatten(t) -> tuple:
    args = get_args(t)
    return sum((_flatten(a) for a in args), ()) if args else (t,)


# Every value Lightning's Trainer accepts for `precision` and `strategy`, read from Lightning itself.
PRECISIONS = tuple(dict.fromkeys(str(p) for p in _flatten(_PRECISION_INPUT)))  # each once
STRATEGIES = ("auto", *StrategyRegistry.available_strategies())
ACCELERATORS = ("auto", "gpu", *sorted(AcceleratorRegistry.available_accelerators()))  # as Lightning's connector takes them
GPU_ACCELERATORS = ("gpu", "cuda")
MATMUL_PRECISIONS = ("highest", "high", "medium")
SHM = "/dev/shm"
PREFETCH_FACTOR = 2  # DataLoader's default: batches each worker keeps ready


def validate_sweep(cfg: DictConfig) -> None:
    """The settings of a sweep as a whole (their ranges are the schema's: bsbench.core.ranges)."""
    if (cfg.target_ci is not None or cfg.budget_min is not None) and not mode_of(cfg.mode).own_rounds:
        if cfg.order == "grid":
            raise UserError("target_ci and budget_min stop a sweep between rounds of repeats, which order=grid does not "
                            "have; use order=interleaved or order=shuffled.")
        if cfg.target_ci is not None and cfg.repeats < 3:
            raise UserError(f"target_ci={cfg.target_ci:g} needs repeats to reach it (a cap of at least 3 rounds); "
                            "use e.g. repeats=20.")


def validate(cfg: DictConfig, here: bool = True) -> None:
    """Raise UserError naming the first setting that cannot work. `here`: the job runs on this
    machine, so its GPUs and shared memory can be looked at (not so for a sweep sent to a cluster)."""
    mode = mode_of(cfg.mode)
    in_range(cfg)  # again: a sweep's later jobs are its first job's typed config with values set in place
    if mode.one_device:
        devices = cfg.devices if isinstance(cfg.devices, int) else None
        if devices != 1 or cfg.trainer.num_nodes != 1:
            raise UserError(f"mode={cfg.mode} {mode.one_device} on one device, not devices={cfg.devices} on "
                            f"{cfg.trainer.num_nodes} node(s); use devices=1 trainer.num_nodes=1.")
    # the mode's own keys first: a mode derives trainer.max_steps from them (profile.repeat=-1 is the
    # mistake, not the trainer.max_steps=-2 it makes)
    mode.check(cfg, here)
    validate_run(cfg, here, mode.full_batches(cfg))  # the job's own first: its mistakes are not an arm's
    for name, arm in mode.arms(cfg):
        try:
            in_range(arm)
            validate_run(arm, here)
        except UserError as err:
            raise UserError(f"{name}: {err}") from None
    energy = mode.energy(cfg)
    if energy is not None and here:
        why = unavailable(cfg.accelerator)
        if why:
            raise UserError(f"{energy[0]}, which this machine cannot measure ({why}); use {energy[1]}.")
    mode.check_steps(cfg, training_steps(cfg))


def validate_run(cfg: DictConfig, here: bool = True, batches: list[tuple[int, str]] | None = None) -> None:
    """The checks of what one run trains on, whatever its mode; `batches`: the batch sizes that must
    each have a full batch, with how the user named them (default: batch_size)."""
    if cfg.matmul_precision is not None and cfg.matmul_precision not in MATMUL_PRECISIONS:
        raise UserError(f"matmul_precision={cfg.matmul_precision} is not a float32 matmul precision; "
                        f"use one of: {', '.join(MATMUL_PRECISIONS)}, or null.")
    if str(cfg.precision) not in PRECISIONS:
        raise UserError(f"precision={cfg.precision} is not a Lightning precision; use one of: {', '.join(PRECISIONS)}.")
    _check_devices(cfg.accelerator, cfg.devices, str(cfg.strategy), here)
    if str(cfg.strategy) not in ("auto", "ddp"):
        for key, default in DDP_DEFAULTS.items():
            if cfg.ddp[key] != default:
                raise UserError(f"ddp.{key}={text(cfg.ddp[key])} is a setting of Lightning's DDPStrategy, which "
                                f"strategy={cfg.strategy} does not take; use strategy=ddp (or auto), or "
                                f"ddp.{key}={text(default)}.")
    if not parts.own(cfg, "model"):
        _check_bsbench_model(cfg)
    if not parts.own(cfg, "data"):
        _check_bsbench_data(cfg, batches, here)
    check_parts(cfg)  # a user's classes: imported and built now, not when the first job starts
    for name, spec in cfg.callbacks.items():
        _check_target(f"callbacks.{name}", spec, "a Lightning callback, e.g. lightning.pytorch.callbacks.LearningRateMonitor")
    if cfg.logger:
        _check_extra(cfg.logger)
        _check_target("logger", cfg.logger, "a Lightning logger, e.g. lightning.pytorch.loggers.CSVLogger")
    if cfg.telemetry.required and importlib.util.find_spec("pynvml") is None:
        raise UserError('telemetry.required=true needs NVML, which is not installed; pip install "bsbench[nvml]", '
                        "or use telemetry.required=false (null telemetry without it).")


def _check_bsbench_model(cfg: DictConfig) -> None:
    """model.arch and its keys: bsbench's classifier."""
    if cfg.model.num_classes < CIFAR10_CLASSES:
        raise UserError(f"model.num_classes={cfg.model.num_classes} is fewer than the dataset's {CIFAR10_CLASSES} "
                        f"classes; use model.num_classes={CIFAR10_CLASSES}.")
    if parts.own(cfg, "data"):  # the images' size is the user's datamodule's
        _check_model(cfg.model.arch, None)
        return
    if cfg.data.shape is not None:
        raise UserError(f"data.shape={list(cfg.data.shape)} is the input of a module of your own on data=synthetic, and "
                        f"model.arch={cfg.model.arch} is bsbench's classifier of data.image_size images; use "
                        "data.shape=null, or model._target_=<your LightningModule>.")
    _check_model(cfg.model.arch, cfg.data.image_size)


def _check_bsbench_data(cfg: DictConfig, batches, here: bool) -> None:
    """data.name and its keys: CIFAR-10 or its synthetic stand-in."""
    if cfg.data.name not in DATASETS:
        raise UserError(f"data={cfg.data.name} is not a dataset bsbench knows; use one of: {', '.join(DATASETS)}.")
    if cfg.data.resize_on not in RESIZE_ON:
        raise UserError(f"data.resize_on={cfg.data.resize_on} is not a place to resize; use one of: {', '.join(RESIZE_ON)}.")
    resize = cfg.data.resize_size
    if resize is not None and not resize >= cfg.data.image_size > 0:
        raise UserError(f"data.resize_size={resize} is smaller than the crop, data.image_size={cfg.data.image_size}; "
                        f"use data.resize_size=null (image_size * 8/7) or at least {cfg.data.image_size}.")
    shape = cfg.data.get("shape")
    if shape is not None and not shape:
        raise UserError("data.shape=[] is not the shape of one input; use e.g. data.shape=[3,64,64].")
    if shape is not None and cfg.data.name != "synthetic":
        raise UserError(f"data.shape={list(shape)} shapes data=synthetic's inputs, and data={cfg.data.name} has its "
                        "own; use data=synthetic, or data.shape=null.")
    for batch_size, subject in [(cfg.batch_size, f"batch_size={cfg.batch_size}")] if batches is None else batches:
        _check_split(cfg, batch_size, subject)
    if here:
        _check_shared_memory(cfg)
        if cfg.data.name == "cifar10":
            _check_cifar10(str(cfg.data.root), cfg.data.download, cfg.data.verify)


@functools.lru_cache(maxsize=None)
def _check_cifar10(root: str, download: bool, verify: bool) -> None:
    """CIFAR-10 where the jobs will read it, downloaded now where it is missing and may be: a missing
    dataset (or no network) is a sentence while the sweep is planned, not a failed first job. (Once
    per place in a process; on a cluster, the jobs' nodes look for themselves.)"""
    ImageDataModule(root=root, download=download, verify=verify).prepare_data()


def _check_devices(accelerator: str, devices, strategy: str, here: bool) -> None:
    if accelerator not in ACCELERATORS:
        raise UserError(f"accelerator={accelerator} is not a Lightning accelerator; use one of: {', '.join(ACCELERATORS)}.")
    if strategy not in STRATEGIES:
        others = [s for s in STRATEGIES if s not in ("auto", "ddp", "ddp_spawn")]
        raise UserError(f"strategy={strategy} is not a Lightning strategy; use auto, ddp, ddp_spawn or one of: "
                        f"{', '.join(others)}.")
    if strategy.startswith("ddp") and accelerator == "mps":
        raise UserError(f"strategy={strategy} cannot run on accelerator=mps (one device, no DDP); use strategy=auto.")
    if not isinstance(devices, int) or isinstance(devices, bool) or devices == -1:
        return  # auto, a list or a string of device indices: Lightning resolves these and explains its errors
    if devices < 1:
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


def _images(cfg: DictConfig) -> int:
    """The training and validation images of bsbench's data set."""
    return cfg.data.num_train_images if cfg.data.name == "synthetic" else 50000  # CIFAR-10's training set


def training_steps(cfg: DictConfig) -> int | None:
    """The training steps a run of `epochs` epochs makes, where the config tells (bsbench's data set, a
    device count): each epoch's full batches, as Lightning's trainer.limit_train_batches and
    trainer.max_steps cut them; None where a datamodule of the user's or devices=auto decides."""
    devices = cfg.devices
    if parts.own(cfg, "data") or not isinstance(devices, int) or isinstance(devices, bool) or devices < 1:
        return None
    per_epoch = (_images(cfg) - cfg.data.val_size) // (cfg.batch_size * devices * cfg.trainer.num_nodes)
    limit = cfg.trainer.limit_train_batches
    if isinstance(limit, float) and limit <= 1:
        per_epoch = int(per_epoch * limit)
    elif limit is not None:
        per_epoch = min(per_epoch, int(limit))
    epochs = cfg.trainer.max_epochs if isinstance(cfg.trainer.max_epochs, int) and cfg.trainer.max_epochs > 0 \
        else None
    steps = [n for n in (per_epoch * epochs if epochs else None, cfg.trainer.max_steps) if n is not None and n > 0]
    return min(steps) if steps else None


def _check_split(cfg: DictConfig, batch_size: int, subject: str) -> None:
    images = _images(cfg)
    if not 0 < cfg.data.val_size < images:
        raise UserError(f"data.val_size={cfg.data.val_size} must leave training images out of {images}; "
                        "use e.g. data.val_size=5000.")
    train_images = images - cfg.data.val_size
    if batch_size > train_images:
        raise UserError(
            f"{subject} is larger than the {train_images} training images, so no full "
            f"batch exists (the last incomplete batch is dropped, as in the reference); use at most {train_images}."
        )


def _check_model(arch: str, image_size: int | None) -> None:
    if arch.startswith(TIMM):
        _check_timm(arch[len(TIMM):])
    elif arch not in _torchvision_models():
        raise UserError(
            f"model.arch={arch} is not a torchvision classification model; "
            f"use e.g. mobilenet_v3_large, mobilenet_v3_small, resnet18, or {TIMM}<a timm model>."
        )
    if image_size is None:
        return
    if image_size < 1:
        raise UserError(f"data.image_size={image_size} is not a positive integer; use e.g. data.image_size=224.")
    problem = _forward_problem(arch, image_size)
    if problem:
        raise UserError(f"data.image_size={image_size} does not fit model.arch={arch} ({problem}); "
                        "use e.g. data.image_size=224.")


@functools.lru_cache(maxsize=None)
def _torchvision_models() -> frozenset[str]:
    """torchvision's classification models (listing them walks the module: 2 ms, once per job of a sweep)."""
    return frozenset(torchvision.models.list_models(module=torchvision.models))


def _check_timm(name: str) -> None:
    if importlib.util.find_spec("timm") is None:
        raise UserError(f'model.arch={TIMM}{name} needs timm, which is not installed; pip install "bsbench[timm]", '
                        "or use a torchvision model, e.g. model.arch=resnet18.")
    import timm

    if name not in timm.list_models():
        raise UserError(f"model.arch={TIMM}{name} is not a timm model; use a name from timm.list_models(), "
                        f"e.g. model.arch={TIMM}resnet18.")


@functools.lru_cache(maxsize=None)
def _forward_problem(arch: str, image_size: int) -> str | None:
    """Try the network on a meta-device batch: shapes are checked, nothing is allocated or computed."""
    try:
        with torch.device("meta"):
            network(arch, 10, image_size).eval()(
                torch.empty(2, 3, image_size, image_size)
            )
    except (RuntimeError, ValueError, AssertionError) as exc:
        return str(exc).splitlines()[0].rstrip(".")
    return None


# Loggers that need an optional package: (packages that would do, the extra that installs one, the choice).
EXTRAS = {
    "TensorBoardLogger": (("tensorboard", "tensorboardX"), "tensorboard", "logger=tensorboard"),
    "MLFlowLogger": (("mlflow",), "mlflow", "logger=mlflow"),
    "WandbLogger": (("wandb",), "wandb", "logger=wandb"),
}


def _check_extra(logger) -> None:
    """A logger whose package is missing would fail every job of the sweep after its data loads, with
    Lightning's traceback: name the install instead, before any job runs."""
    target = logger.get("_target_") if hasattr(logger, "get") else None
    if not isinstance(target, str) or target.rsplit(".", 1)[-1] not in EXTRAS:
        return
    packages, extra, choice = EXTRAS[target.rsplit(".", 1)[-1]]
    if not any(importlib.util.find_spec(name) for name in packages):
        raise UserError(f'{choice} needs the {packages[0]} package, which is not installed; pip install "bsbench[{extra}]", '
                        "or choose another logger, e.g. logger=csv.")


def _check_target(key: str, spec, example: str) -> None:
    """An extra callback or logger must name a class that imports here, or the job fails after the data loads."""
    target = spec.get("_target_") if hasattr(spec, "get") else None
    if not isinstance(target, str):
        raise UserError(f"{key}={spec} names no class; use {key}._target_=<{example}>.")
    try:
        get_class(target)
    except Exception as exc:
        cause = exc.__cause__ or exc
        raise UserError(f"{key}._target_={target} cannot be imported ({type(cause).__name__}: "
                        f"{str(cause).splitlines()[0] if str(cause) else ''}); use {example}.") from None


def _check_shared_memory(cfg: DictConfig) -> None:
    """DataLoader workers hand their batches over in /dev/shm; with resize_on=cpu those are full-size
    float images, and a too-small /dev/shm (Docker's default is 64 MB) kills the workers with a bus
    error mid-run."""
    if cfg.data.resize_on != "cpu" or cfg.data.num_workers == 0 or not Path(SHM).is_dir():
        return
    ranks = cfg.devices if isinstance(cfg.devices, int) and cfg.devices > 0 else 1
    batch_bytes = cfg.batch_size * 3 * cfg.data.image_size**2 * 4
    needed = ranks * cfg.data.num_workers * PREFETCH_FACTOR * batch_bytes
    free = shutil.disk_usage(SHM).free
    if needed > free:
        raise UserError(
            f"data.resize_on=cpu with data.num_workers={cfg.data.num_workers} keeps about {needed / 2**20:,.0f} MiB of "
            f"batches in {SHM}, which has {free / 2**20:,.0f} MiB free (the loader workers would die with a bus error); "
            "use data.resize_on=device, fewer data.num_workers, or a larger /dev/shm (e.g. docker run --shm-size=8g).")


def check_output_root(output_root: str) -> None:
    """Hydra creates output_root when the first run starts and fails there with a traceback if it cannot:
    check now, without creating anything, that it exists as a writable directory or can be made."""
    path = Path(output_root).expanduser().absolute()
    existing = next(p for p in (path, *path.parents) if p.exists())
    problem = None
    if not existing.is_dir():
        problem = f"{existing} is not a directory"
    elif not os.access(existing, os.W_OK | os.X_OK):
        problem = f"{existing} is not writable"
    elif existing == path:
        try:
            tempfile.TemporaryFile(dir=path).close()
        except OSError as exc:
            problem = exc.strerror
    if problem:
        raise UserError(f"output_root={output_root} is not a writable directory ({problem}); "
                        "use output_root=<a writable directory>.")
