"""Lightning callbacks that fail a run the way real failures do, added from the command line with
+callbacks.fault._target_=faults.<Name> (the tests put this folder on PYTHONPATH)."""

import time

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
    """Raises in the first training step on one DDP rank only, leaving the others in a collective; with
    `batch_size`, only in the job with that many images per batch."""

    def __init__(self, rank: int, batch_size: int | None = None):
        self.rank, self.batch_size = rank, batch_size

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_rank == self.rank and self.batch_size in (None, _batch_size(batch)):
            raise ValueError(f"simulated failure on rank {self.rank}")


class DiskFullAtRecord(L.Callback):
    """The disk fills while the job with `batch_size` images per batch trains: Hydra's .hydra/hydra.yaml
    of the job is left empty, and writing the job's results.json fails with ENOSPC."""

    def __init__(self, batch_size: int):
        self.batch_size = batch_size

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if _batch_size(batch) != self.batch_size or batch_idx:
            return
        import errno
        from pathlib import Path

        from hydra.core.hydra_config import HydraConfig

        import bsbench.job.job

        (Path(HydraConfig.get().runtime.output_dir) / ".hydra" / "hydra.yaml").write_text("")

        def disk_full(path, obj):
            raise OSError(errno.ENOSPC, "No space left on device", str(path))

        bsbench.job.job.write_json_atomic = disk_full


class KillRank(L.Callback):
    """SIGKILLs one DDP rank in its first training step, as the kernel's out-of-memory killer would."""

    def __init__(self, rank: int):
        self.rank = rank

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_rank == self.rank:
            import os
            import signal

            os.kill(os.getpid(), signal.SIGKILL)


class WaitFor(L.Callback):
    """Waits in the first training step of the job with `batch_size` images per batch until the file
    `path` exists: a run that hangs until the test lets it go. While it waits, `path`.waiting holds
    its SLURM job id (empty outside SLURM)."""

    def __init__(self, batch_size: int, path: str):
        self.batch_size, self.path = batch_size, path

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        import os
        import time
        from pathlib import Path

        if _batch_size(batch) != self.batch_size or batch_idx or Path(self.path).exists():
            return
        array, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
        if trainer.global_rank == 0:
            Path(f"{self.path}.waiting").write_text(f"{array}_{task}" if array else os.environ.get("SLURM_JOB_ID", ""))
        while not Path(self.path).exists():
            time.sleep(0.1)


class ExtraOp(L.Callback):
    """Plants a difference for mode=profile to find: an operator that training never runs (aten::sort of
    200,000 numbers, some milliseconds) in every training step of the job with `batch_size` images per
    batch only."""

    def __init__(self, batch_size: int):
        self.batch_size = batch_size
        self.numbers = torch.randn(200_000)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if _batch_size(batch) == self.batch_size:
            torch.sort(self.numbers)


class SlowForward(L.Callback):
    """mode=inference: `first_s` seconds more in the first forward pass (a warm-up), `each_s` in every
    other, inside the interval the timing measures."""

    def __init__(self, first_s: float, each_s: float):
        self.first_s, self.each_s = first_s, each_s

    def on_predict_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        time.sleep(self.first_s if batch_idx == 0 else self.each_s)


class StopAfterStage(L.Callback):
    """Ctrl-C in the first training step after a tune's `stage` has finished (its done.json is in the tune's
    folder, the Trainer's default_root_dir), once per folder: the run it stops and the resumed one are the
    same configuration, and only the first is stopped."""

    def __init__(self, stage: str):
        self.stage = stage

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        import os
        import signal
        from pathlib import Path

        folder = Path(trainer.default_root_dir)
        if (folder / self.stage / "done.json").is_file() and not (folder / ".stopped").exists():
            (folder / ".stopped").write_text(self.stage)
            os.kill(os.getpid(), signal.SIGINT)
