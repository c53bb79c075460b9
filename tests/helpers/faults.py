"""Lightning callbacks that fail a run the way real failures do, added from the command line with
+callbacks.fault._target_=faults.<Name> (the tests put this folder on PYTHONPATH)."""

import lightning as L
import torch


def _batch_size(batch) -> int:
    return len(batch[0])


class FailAt(L.Callback):
    """Raises in the first training step whose batch has `batch_size` images: CUDA's out-of-memory
    error (error=oom) or any other exception (error=value)."""

    def __init__(self, batch_size: int, error: str = "oom"):
        self.batch_size, self.error = batch_size, error

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if _batch_size(batch) == self.batch_size:
            if self.error == "oom":
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (simulated)")
            raise ValueError(f"simulated failure at batch size {self.batch_size}")


class OOMAbove(L.Callback):
    """Out of memory for every batch larger than `limit`, like a device with a memory edge."""

    def __init__(self, limit: int):
        self.limit = limit

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if _batch_size(batch) > self.limit:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (simulated)")


class FailOnRank(L.Callback):
    """Raises in the first training step on one DDP rank only, leaving the others in a collective."""

    def __init__(self, rank: int):
        self.rank = rank

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_rank == self.rank:
            raise ValueError(f"simulated failure on rank {self.rank}")
