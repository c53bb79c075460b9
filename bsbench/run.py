"""Build the datamodule, model and Trainer from the composed config, train, test, and gather the
result. Config -> validate -> build -> run -> result; nothing here reads the command line."""

import logging
import os
import signal
import time
from contextlib import contextmanager

import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.tuner import Tuner
from lightning.pytorch.utilities.memory import garbage_collection_cuda
from omegaconf import DictConfig, OmegaConf

from bsbench.data import ImageDataModule
from bsbench.environment import describe
from bsbench.errors import UserError
from bsbench.model import ImageClassifier
from bsbench.result import is_oom, now, setup_fields, unfinished
from bsbench.telemetry import TelemetryCallback
from bsbench.timing import StepTimer, TimingCallback

log = logging.getLogger("bsbench")


def build(cfg: DictConfig):
    """The datamodule, module and Trainer of a run, and the callbacks whose measurements it reports."""
    datamodule = ImageDataModule(batch_size=cfg.batch_size, **cfg.data)
    model = ImageClassifier(**cfg.model, channels_last=cfg.channels_last, log_train_loss=cfg.mode != "throughput")
    if cfg.compile:
        model = torch.compile(model)
    if cfg.matmul_precision:
        torch.set_float32_matmul_precision(cfg.matmul_precision)
    throughput = cfg.mode == "throughput"
    warmup = cfg.throughput.warmup_steps if throughput else cfg.timing.warmup_steps
    timing, telemetry = TimingCallback(warmup), TelemetryCallback(**cfg.telemetry)
    callbacks = [timing, telemetry, *(instantiate(c) for c in (cfg.get("callbacks") or {}).values())]
    trainer_args = OmegaConf.to_container(cfg.trainer, resolve=True)
    logger = instantiate(cfg.logger) if cfg.get("logger") else False
    if throughput:  # timed steps and nothing else
        callbacks.append(StepTimer(warmup))
        trainer_args.update(max_steps=warmup + cfg.throughput.steps, limit_val_batches=0, num_sanity_val_steps=0,
                            enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
        logger = False
    trainer = L.Trainer(
        accelerator=cfg.accelerator,
        devices=cfg.devices,
        strategy=cfg.strategy,
        precision=cfg.precision,
        max_epochs=-1 if throughput else cfg.epochs,
        benchmark=cfg.cudnn_benchmark,
        logger=logger,
        callbacks=callbacks,
        **trainer_args,
    )
    return datamodule, model, trainer, timing, telemetry


def run(cfg: DictConfig) -> dict | None:
    """Run once in the configured mode; returns the result on the process that writes it (global
    rank 0). Errors propagate: the caller decides what becomes of them."""
    started_at = now()
    L.seed_everything(cfg.seed, workers=True)
    datamodule, model, trainer, timing, telemetry = build(cfg)
    try:
        if cfg.mode == "find_max":
            measured = _find_max(cfg, trainer, model, datamodule)
        elif cfg.mode == "throughput":
            measured = _throughput(trainer, model, datamodule, timing)
        else:
            measured = _train_and_test(trainer, model, datamodule, timing)
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
        **telemetry.metrics(),
        "started_at": started_at,
        "finished_at": now(),
        **describe(trainer.strategy.root_device),
        "config": OmegaConf.to_container(cfg, resolve=True),
    }


def attempt(cfg: DictConfig) -> dict | None:
    """run(), with a failure turned into its result (status oom or failed) and its memory given back.
    A user's mistake and an interruption propagate: they are not results of this configuration."""
    try:
        with process_state_restored():
            return run(cfg)
    except (UserError, KeyboardInterrupt):
        raise
    except Exception as exc:
        # when it failed (TimingCallback marks Lightning's exceptions): with several ranks, the first
        # rank to fail is the cause (bsbench.ranks)
        failed_at = getattr(exc, "failed_at", time.time())
        result = {**unfinished(cfg, "oom" if is_oom(exc) else "failed", exc), "failed_at": failed_at}
        log.error("%s: %s", result["status"], result["traceback"])
    finally:
        # the failed run's trainer, model and tensors are unreachable once the exception is gone
        garbage_collection_cuda()
    return result


@contextmanager
def process_state_restored():
    """A job must not change the next one's, in the same process: Lightning's DDP leaves its
    environment variables (LOCAL_RANK, WORLD_SIZE, MASTER_PORT, ...) and an initialized process group
    behind, which the next job would join, and matmul_precision sets a process-wide value."""
    saved = dict(os.environ)
    matmul_precision = torch.get_float32_matmul_precision()
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(matmul_precision)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
        os.environ.clear()
        os.environ.update(saved)


def _train_and_test(trainer, model, datamodule, timing) -> dict:
    trainer.fit(model, datamodule=datamodule)
    timing.collect(trainer)
    val_acc = trainer.callback_metrics.get("val_acc")
    tested = trainer.test(model, datamodule=datamodule, verbose=False)
    timing.collect(trainer)
    return {
        **timing.metrics(),
        # Lightning tests with every rank, each on its shard of the test set (the reference used one device)
        "inference_world_size": trainer.world_size,
        "val_acc": float(val_acc) if val_acc is not None else None,
        "test_acc": tested[0].get("test_acc") if tested else None,
    }


def _throughput(trainer, model, datamodule, timing) -> dict:
    trainer.fit(model, datamodule=datamodule)
    timing.collect(trainer)
    (step_timer,) = [c for c in trainer.callbacks if isinstance(c, StepTimer)]
    metrics = timing.metrics()
    return {**metrics, **step_timer.metrics(trainer), "inference_time_s": None, "inference_samples_per_s": None,
            "val_acc": None, "test_acc": None}


def _find_max(cfg, trainer, model, datamodule) -> dict:
    """Lightning's batch-size finder: double from batch_size until memory runs out, then bisect,
    with a few real training steps per trial."""
    found = Tuner(trainer).scale_batch_size(
        model, datamodule=datamodule, mode="binsearch", init_val=cfg.batch_size, **cfg.find_max
    )
    return {"max_batch_size": found}
