"""Build a run from its typed config: the datamodule, the module (bsbench's or the user's:
bsbench.training.parts) and the Trainer with bsbench's
callbacks. The mode is config (conf/mode/) and the callbacks a mode adds (mode=profile's profiler):
nothing here depends on which mode it is, so what a run's config says is what its Trainer got."""

import logging
import os
from dataclasses import dataclass

import lightning as L
import torch
from hydra.utils import instantiate
from lightning.fabric.plugins.environments import SLURMEnvironment
from lightning.pytorch.strategies import DDPStrategy
from omegaconf import DictConfig, OmegaConf

from bsbench.core import parts
from bsbench.core.config import DDP_DEFAULTS
from bsbench.core.tuning import REPLAY
from bsbench.training.health import LossWatch
from bsbench.training.parts import make_datamodule, make_module, set_batch_size
from bsbench.training.replay import replay_on
from bsbench.training.telemetry import TelemetryCallback
from bsbench.training.timing import StepTimer, TimingCallback

log = logging.getLogger("bsbench")


@dataclass
class Built:
    datamodule: L.LightningDataModule
    model: L.LightningModule
    trainer: L.Trainer
    timing: TimingCallback
    step_timer: StepTimer
    telemetry: TelemetryCallback
    loss_watch: LossWatch


def _logger(spec: DictConfig | None):
    if not spec:
        return False
    if str(spec.get("_target_", "")).endswith("MLFlowLogger") and not spec.get("tracking_uri"):
        # logger=mlflow's default local file store: MLflow 3 keeps it in maintenance mode behind this opt-in
        # (a database or a server is a tracking_uri away); bsbench.job.run restores the environment after the job
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    return instantiate(spec)


def build(cfg: DictConfig, callbacks=(), reuse: Built | None = None) -> Built:
    """A run's parts, with a mode's own `callbacks` after bsbench's; with `reuse`, a new Trainer (and
    callbacks) for that run's datamodule and model, which go on where they were (mode=compare's rounds)."""
    datamodule = reuse.datamodule if reuse else make_datamodule(cfg, cfg.timing.warmup_steps + cfg.inference.batches)
    model = reuse.model if reuse else make_module(cfg)
    if not reuse:  # where the module and datamodule keep it, as Lightning's BatchSizeFinder sets it
        set_batch_size((model, datamodule), cfg.batch_size)
    if cfg.compile and not reuse:
        # static shapes: each job compiles for its own batch size (bsbench.job.run resets dynamo's cache
        # between jobs), instead of one dynamic-shape graph that every later batch size would reuse
        model = torch.compile(model, dynamic=False)
    if cfg.matmul_precision:
        torch.set_float32_matmul_precision(cfg.matmul_precision)
    timing = TimingCallback(cfg.timing.warmup_steps)
    step_timer = StepTimer(cfg.timing.warmup_steps)
    telemetry = TelemetryCallback(**cfg.telemetry)
    loss_watch = LossWatch()
    extra = [*callbacks, *(instantiate(c) for c in cfg.callbacks.values())]
    options = OmegaConf.to_container(cfg.trainer, resolve=True)
    if options.get("plugins") is None and SLURMEnvironment.detect():
        # no requeue on SIGUSR1: a bsbench run has no checkpoint to go on from; a job SLURM stops is
        # recorded as interrupted, and resume= runs it again
        options["plugins"] = [SLURMEnvironment(auto_requeue=False)]
    trainer = L.Trainer(
        accelerator=cfg.accelerator,
        devices=OmegaConf.to_container(cfg.devices) if OmegaConf.is_config(cfg.devices) else cfg.devices,
        strategy=strategy_of(cfg),
        precision=cfg.precision,
        benchmark=cfg.cudnn_benchmark,
        logger=_logger(cfg.logger),
        callbacks=[timing, step_timer, telemetry, loss_watch, *extra],
        **options,
    )
    if not reuse and parts.own(cfg, "data") and trainer.world_size > 1:
        per_rank(datamodule, trainer, cfg.batch_size)
    if not reuse and cfg.get(REPLAY):  # mode=tune's ceiling arm: no step waits for its data
        replay_on(datamodule, trainer.strategy.root_device)
    return Built(datamodule, model, trainer, timing, step_timer, telemetry, loss_watch)


def ddp_options(cfg: DictConfig) -> dict:
    """The ddp settings that differ from DistributedDataParallel's defaults."""
    return {key: cfg.ddp[key] for key, default in DDP_DEFAULTS.items() if cfg.ddp[key] != default}


def strategy_of(cfg: DictConfig):
    """Lightning's strategy for a run: on several devices with ddp settings of its own, Lightning's DDPStrategy
    passing them to DistributedDataParallel (bsbench.job.validate allows them with strategy=auto or ddp only);
    else `strategy` as written."""
    options = ddp_options(cfg)
    if not options or (cfg.devices == 1 and cfg.trainer.num_nodes == 1):
        return cfg.strategy
    return DDPStrategy(**options)


_told: set = set()  # the datamodules whose convention was said, once per process


def per_rank(datamodule: L.LightningDataModule, trainer: L.Trainer, batch_size: int) -> None:
    """bsbench's batch_size is per device. A datamodule that divides the batch size it keeps by the world size
    in its setup (the lightning-hydra-template's: a global batch) would make each device's batches
    `world_size` times smaller than the run is labelled with: its loader is looked at once (setup and
    train_dataloader, as fit calls them) and, where it made batch_size / world_size, the datamodule is given
    batch_size x world_size, said once. What the loader makes in the timed steps is checked against
    batch_size all the same (bsbench.job.fit.check_trained). A setup that refuses a batch size it cannot
    divide by the world size (the template's, given an odd batch per device on two) is asked again with
    batch_size x world_size, and keeps it where its loader then makes batch_size."""
    world = trainer.world_size
    datamodule.trainer = trainer  # as Trainer.fit attaches it, which its setup reads

    def made() -> int | None:
        try:
            datamodule.setup("fit")
            return getattr(datamodule.train_dataloader(), "batch_size", None)
        except Exception:  # a datamodule that needs more of fit than this: the check after the run tells
            return None

    first = made()
    if first is not None and (first == batch_size or first * world != batch_size):
        return
    set_batch_size((datamodule,), batch_size * world)  # the module keeps the per-device batch it trains on
    if first is None and made() != batch_size:  # not the convention: what it was given, as it was
        set_batch_size((datamodule,), batch_size)
        return
    name = type(datamodule).__qualname__
    if name not in _told and trainer.is_global_zero:
        _told.add(name)
        log.info("%s divides the batch size it is given by the world size (%d): bsbench gives it %d, so that each "
                 "device trains on batch_size=%d as the results say (global_batch_size=%d)", name, world,
                 batch_size * world, batch_size, batch_size * world)
