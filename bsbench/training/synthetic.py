"""data=synthetic for a module of the user's: batches of random inputs with the shape and dtype of one
input (the module's `example_input_array`, Lightning's convention, or `data.shape`), made on the
training device at the batch size, and int64 class targets, so any model can be timed without a
dataset. The loaders only hand out sample indices: nothing is read, decoded or copied per sample."""

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from bsbench.training.data import batch_as_is


class Indices(Dataset):
    """`length` samples; a batch of them is its indices, one tensor."""

    def __init__(self, length: int):
        self.length = length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> int:
        return index

    def __getitems__(self, indices: list[int]) -> torch.Tensor:
        return torch.as_tensor(indices)


class SyntheticInputs(L.LightningDataModule):
    """Random (inputs, targets) batches: floating-point inputs from a normal distribution, integer
    inputs (token ids) below `high`, targets below `classes`. The sample counts and the train/val
    split are data=synthetic's (data.num_train_images, data.val_size, data.num_test_images)."""

    def __init__(self, shape: tuple[int, ...], dtype: torch.dtype, classes: int, batch_size: int,
                 num_train_images: int, val_size: int, num_test_images: int, predict_batches: int = 0,
                 high: int = 2, channels_last: bool = False):
        super().__init__()
        self.shape, self.dtype, self.classes, self.high = tuple(shape), dtype, classes, high
        self.batch_size = batch_size
        self.sizes = {"train": num_train_images - val_size, "val": val_size, "test": num_test_images}
        self.predict_batches = predict_batches  # mode=inference: this many full batches
        self.channels_last = channels_last

    def _loader(self, length: int, drop_last: bool = False) -> DataLoader:
        return DataLoader(Indices(length), batch_size=self.batch_size, collate_fn=batch_as_is, drop_last=drop_last)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.sizes["train"], drop_last=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.sizes["val"])

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.sizes["test"])

    def predict_dataloader(self) -> DataLoader:
        return self._loader(self.predict_batches * self.batch_size)

    def on_after_batch_transfer(self, indices: torch.Tensor, dataloader_idx: int):
        n, device = len(indices), indices.device
        shape = (n, *self.shape)
        if self.dtype.is_floating_point or self.dtype.is_complex:
            inputs = torch.randn(shape, device=device, dtype=self.dtype)
        else:
            inputs = torch.randint(0, self.high, shape, device=device).to(self.dtype)
        if self.channels_last and inputs.ndim == 4:
            inputs = inputs.contiguous(memory_format=torch.channels_last)
        precision = getattr(self.trainer, "precision_plugin", None)
        if precision is not None and inputs.is_floating_point():  # 16-true, bf16-true: the module's dtype
            inputs = precision.convert_input(inputs)
        return inputs, torch.randint(0, self.classes, (n,), device=device)
