"""The input pipeline's ceiling: the same module trained on batches that the datamodule's own training
loader made once, kept on the device and replayed, so that no step waits for its data. mode=tune races it
against your loader (bsbench.core.tuning): how much faster the steps are without the wait is what your
input pipeline costs. The batches are the loader's first few, as it made them (its transforms, its
collation), moved to the device once; an epoch has as many of them as the loader has batches."""

import itertools

import lightning as L
import torch
from lightning.fabric.utilities.apply_func import move_data_to_device

KEPT = 8  # batches kept: enough that a round's steps do not reuse one batch back to back


class Replay:
    """`batches`, cycled, `length` of them per pass: an iterable Lightning trains on like a loader."""

    def __init__(self, batches: list, length: int):
        self.batches, self.length = batches, length

    def __len__(self) -> int:
        return self.length

    def __iter__(self):
        return itertools.islice(itertools.cycle(self.batches), self.length)


def replay_on(datamodule: L.LightningDataModule, device: torch.device, kept: int = KEPT) -> None:
    """Make the datamodule's train_dataloader give its loader's first `kept` batches, on `device`, replayed:
    read once, when Lightning first asks for the loader (after the datamodule's setup)."""
    original = datamodule.train_dataloader
    cache: list = []
    length: list[int] = []

    def train_dataloader():
        if not cache:
            loader = original()
            try:
                length.append(len(loader))
            except TypeError:  # an iterable without a length: as many batches as were kept
                length.append(kept)
            for batch in itertools.islice(iter(loader), kept):
                cache.append(move_data_to_device(batch, device))
            if not cache:
                raise RuntimeError("the training loader made no batch to replay")
        return Replay(cache, length[0])

    datamodule.train_dataloader = train_dataloader
