"""Build the datamodule, model and Trainer from the composed config, train, test, and gather the
result. Config -> validate -> build -> run -> result; nothing here reads the command line."""

import datetime as dt

import lightning as L
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from bsbench.data import ImageDataModule
from bsbench.environment import describe
from bsbench.model import ImageClassifier
from bsbench.timing import TimingCallback


def build(cfg: DictConfig) -> tuple[ImageDataModule, ImageClassifier, L.Trainer, TimingCallback]:
    datamodule = ImageDataModule(batch_size=cfg.batch_size, **cfg.data)
    model = ImageClassifier(**cfg.model)
    timing = TimingCallback(**cfg.timing)
    logger = instantiate(cfg.logger) if cfg.get("logger") else False
    trainer = L.Trainer(
        accelerator=cfg.accelerator,
        devices=cfg.devices,
        strategy=cfg.strategy,
        precision=cfg.precision,
        max_epochs=cfg.epochs,
        logger=logger,
        callbacks=[timing],
        **OmegaConf.to_container(cfg.trainer, resolve=True),
    )
    return datamodule, model, trainer, timing


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).astimezone().isoformat(timespec="seconds")


def run(cfg: DictConfig) -> dict | None:
    """Train and test once; returns the result on the process that writes it (global rank 0)."""
    started_at = now()
    L.seed_everything(cfg.seed, workers=True)
    datamodule, model, trainer, timing = build(cfg)
    trainer.fit(model, datamodule=datamodule)
    val_acc = trainer.callback_metrics.get("val_acc")
    tested = trainer.test(model, datamodule=datamodule, verbose=False)
    if not trainer.is_global_zero:
        return None
    return {
        "status": "ok",
        "batch_size": cfg.batch_size,
        "global_batch_size": cfg.batch_size * trainer.world_size,
        "precision": str(cfg.precision),
        "precision_used": str(trainer.precision),
        "devices": cfg.devices,
        "world_size": trainer.world_size,
        "num_nodes": trainer.num_nodes,
        "strategy": str(cfg.strategy),
        "accelerator": str(cfg.accelerator),
        "epochs": cfg.epochs,
        "model": cfg.model.arch,
        "data": cfg.data.name,
        "image_size": cfg.data.image_size,
        "seed": cfg.seed,
        **timing.metrics(),
        "val_acc": float(val_acc) if val_acc is not None else None,
        "test_acc": tested[0].get("test_acc") if tested else None,
        "started_at": started_at,
        "finished_at": now(),
        **describe(trainer.strategy.root_device),
        "config": OmegaConf.to_container(cfg, resolve=True),
    }
