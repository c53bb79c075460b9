"""Build the datamodule, model and Trainer from the composed config, train, test, and gather the
result. Config -> validate -> build -> run -> result; nothing here reads the command line."""

import datetime as dt
import signal

import lightning as L
from hydra.utils import instantiate
from lightning.pytorch.tuner import Tuner
from omegaconf import DictConfig, OmegaConf

from bsbench.data import ImageDataModule
from bsbench.environment import describe
from bsbench.model import ImageClassifier
from bsbench.result import setup_fields
from bsbench.timing import TimingCallback


def build(cfg: DictConfig) -> tuple[ImageDataModule, ImageClassifier, L.Trainer, TimingCallback]:
    datamodule = ImageDataModule(batch_size=cfg.batch_size, **cfg.data)
    model = ImageClassifier(**cfg.model)
    timing = TimingCallback(**cfg.timing)
    extra_callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values()]
    logger = instantiate(cfg.logger) if cfg.get("logger") else False
    trainer = L.Trainer(
        accelerator=cfg.accelerator,
        devices=cfg.devices,
        strategy=cfg.strategy,
        precision=cfg.precision,
        max_epochs=cfg.epochs,
        logger=logger,
        callbacks=[timing, *extra_callbacks],
        **OmegaConf.to_container(cfg.trainer, resolve=True),
    )
    return datamodule, model, trainer, timing


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).astimezone().isoformat(timespec="seconds")


def run(cfg: DictConfig) -> dict | None:
    """Run once in the configured mode; returns the result on the process that writes it (global
    rank 0). Errors propagate: the caller decides what becomes of them."""
    started_at = now()
    L.seed_everything(cfg.seed, workers=True)
    datamodule, model, trainer, timing = build(cfg)
    try:
        measured = _find_max(cfg, trainer, model, datamodule) if cfg.mode == "find_max" else \
            _train_and_test(trainer, model, datamodule, timing)
    except SystemExit:
        # Lightning answers Ctrl-C with sys.exit(1) after ignoring further SIGINTs; give both back.
        if trainer.interrupted:
            signal.signal(signal.SIGINT, signal.default_int_handler)
            raise KeyboardInterrupt from None
        raise
    if not trainer.is_global_zero:
        return None
    return {
        "status": "ok",
        **setup_fields(cfg),
        "global_batch_size": cfg.batch_size * trainer.world_size,
        "precision_used": str(trainer.precision),
        "world_size": trainer.world_size,
        "num_nodes": trainer.num_nodes,
        **measured,
        "started_at": started_at,
        "finished_at": now(),
        **describe(trainer.strategy.root_device),
        "config": OmegaConf.to_container(cfg, resolve=True),
    }


def _train_and_test(trainer, model, datamodule, timing) -> dict:
    trainer.fit(model, datamodule=datamodule)
    val_acc = trainer.callback_metrics.get("val_acc")
    tested = trainer.test(model, datamodule=datamodule, verbose=False)
    return {
        **timing.metrics(),
        "val_acc": float(val_acc) if val_acc is not None else None,
        "test_acc": tested[0].get("test_acc") if tested else None,
    }


def _find_max(cfg, trainer, model, datamodule) -> dict:
    """Lightning's batch-size finder: double from batch_size until memory runs out, then bisect,
    with a few real training steps per trial."""
    found = Tuner(trainer).scale_batch_size(
        model, datamodule=datamodule, mode="binsearch", init_val=cfg.batch_size, **cfg.find_max
    )
    return {"max_batch_size": found}
