"""Run one job in its mode and gather the result. Config -> validate -> build -> run -> result;
nothing here reads the command line. The mode's run is bsbench.job.runs'; a failure becomes the job's
result (status oom or failed)."""

import logging
import os
import time
from contextlib import contextmanager

import lightning as L
import torch
from lightning.pytorch.utilities.memory import garbage_collection_cuda
from omegaconf import DictConfig

from bsbench.core.errors import UserError
from bsbench.core.fields import Status
from bsbench.core.oom import is_oom
from bsbench.core.results import now
from bsbench.job.console import LOG_ONLY
from bsbench.job.record import unfinished
from bsbench.job.runs import RUNS

log = logging.getLogger("bsbench")


def run(cfg: DictConfig) -> dict | None:
    """Run once in the configured mode (its run: bsbench.job.runs); returns the result on the process that
    writes it (global rank 0). Errors propagate: the caller decides what becomes of them."""
    started_at = now()
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    return RUNS[cfg.mode](cfg, started_at)


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
        # rank to fail is the cause (bsbench.job.ranks)
        failed_at = getattr(exc, "failed_at", time.time())
        result = {**unfinished(cfg, Status.OOM if is_oom(exc) else Status.FAILED, exc), "failed_at": failed_at}
        log.error("%s: %s", result["status"], result["traceback"], extra={LOG_ONLY: True})
    finally:
        # the failed run's trainer, model and tensors are unreachable once the exception is gone
        garbage_collection_cuda()
    return result


@contextmanager
def process_state_restored():
    """A job must not change the next one's, in the same process: Lightning's DDP leaves its
    environment variables (LOCAL_RANK, WORLD_SIZE, MASTER_PORT, ...) and an initialized process group
    behind, which the next job would join; matmul_precision sets a process-wide value; and
    torch.compile's cache would hand the next job this one's graphs (or, past its recompile limit,
    silently run it uncompiled)."""
    saved = dict(os.environ)
    matmul_precision = torch.get_float32_matmul_precision()
    torch._dynamo.reset()
    try:
        yield
    finally:
        torch._dynamo.reset()
        torch.set_float32_matmul_precision(matmul_precision)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
        os.environ.clear()
        os.environ.update(saved)
