"""CIFAR-10 (or a synthetic stand-in with the same shapes) as a LightningDataModule.

The split and the transforms are the reference's: 45,000/5,000 train/val from CIFAR-10's training set
by a fixed generator, the 10,000 test images for inference; train Resize -> RandomCrop, eval Resize
-> CenterCrop, pixels scaled to [0, 1]. Validation uses the eval transform (the reference reused the
training transform there; accuracy, not speed, is what that changes).

Where the resize happens is `resize_on`:
- `device` (default): the loader only indexes 32 px uint8 images held in memory; whole batches are
  resized and cropped on the training device after the transfer. The reference's PIL path delivers a
  few thousand images/s per CPU core, slower than a current GPU trains, which would hide any effect
  of the batch size behind the input pipeline.
- `cpu`: the reference's path, PIL per image in DataLoader workers, for a faithful reproduction.
"""

import functools
from pathlib import Path

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, Subset
from torchvision import transforms
from torchvision.datasets import CIFAR10
from torchvision.datasets.utils import check_integrity
from torchvision.datasets.vision import VisionDataset
from torchvision.transforms.v2 import functional as TF

from bsbench.core.errors import UserError

CIFAR10_SHAPE = (32, 32, 3)
CIFAR10_CLASSES = 10
DATASETS = ("cifar10", "synthetic")
RESIZE_ON = ("device", "cpu")


class CheckedCIFAR10(CIFAR10):
    """torchvision's CIFAR10, whose md5 check of every file can be turned off (data.verify=false) to
    read files in CIFAR-10's format that are not the published ones, such as a subset."""

    def __init__(self, root: str, train: bool, verify: bool = True):
        self._skip_md5(not verify)
        super().__init__(root, train=train, download=False)

    def _skip_md5(self, skip: bool) -> None:
        if skip:  # torchvision's check_integrity(path, md5=None) only checks that the file exists
            self.train_list = [[name, None] for name, _ in CIFAR10.train_list]
            self.test_list = [[name, None] for name, _ in CIFAR10.test_list]
            self.meta = {**CIFAR10.meta, "md5": None}

    @classmethod
    def present(cls, root: str, verify: bool) -> bool:
        probe = cls.__new__(cls)
        probe.root = root
        probe._skip_md5(not verify)
        return probe._check_integrity() and probe._check_integrity_meta()

    def _check_integrity_meta(self) -> bool:
        return check_integrity(str(Path(self.root) / self.base_folder / self.meta["filename"]), self.meta["md5"])


class ArrayCIFAR10(CIFAR10):
    """CIFAR10's own item path (uint8 HWC array -> PIL -> transform) over images already in memory:
    the `cpu` path, identical per image to torchvision's CIFAR10."""

    def __init__(self, data: np.ndarray, targets: list[int], transform=None):
        VisionDataset.__init__(self, root=None, transform=transform)
        self.data, self.targets = data, targets


class TensorImages(Dataset):
    """The `device` path: the decoded uint8 images, shared without a copy, and their labels; a batch
    is one indexing operation (DataLoader's __getitems__), with no per-image Python work. Images come
    out as (N, 3, H, W) views of HWC memory, i.e. channels-last."""

    def __init__(self, data: np.ndarray, targets: list[int]):
        self.images = torch.from_numpy(data)
        self.targets = torch.as_tensor(targets, dtype=torch.long)

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index):
        return self.images[index].permute(2, 0, 1), self.targets[index]

    def __getitems__(self, indices: list[int]):
        index = torch.as_tensor(indices)
        return self.images[index].permute(0, 3, 1, 2), self.targets[index]


class Cycled(Dataset):
    """`length` items of `dataset`, starting over where it ends (mode=inference's full batches)."""

    def __init__(self, dataset: Dataset, length: int):
        self.dataset, self.length = dataset, length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index):
        return self.dataset[index % len(self.dataset)]

    def __getitems__(self, indices: list[int]):
        wrapped = [i % len(self.dataset) for i in indices]
        if hasattr(self.dataset, "__getitems__"):
            return self.dataset.__getitems__(wrapped)
        return [self.dataset[i] for i in wrapped]


def batch_as_is(batch):
    """collate_fn for TensorImages: __getitems__ already returns the batch."""
    return batch


@functools.lru_cache(maxsize=2)
def load_arrays(name: str, root: str | None, verify: bool, num_train: int, num_test: int, seed: int):
    """Decoded images and labels, (train, test) as ((N, 32, 32, 3) uint8, labels). Cached: the jobs of
    a sweep run in one process and read the dataset once."""
    if name == "synthetic":
        rng = np.random.default_rng(seed)
        return tuple(
            (rng.integers(0, 256, size=(n, *CIFAR10_SHAPE), dtype=np.uint8),
             rng.integers(0, CIFAR10_CLASSES, size=n).tolist())
            for n in (num_train, num_test)
        )
    return tuple((ds.data, ds.targets) for ds in (CheckedCIFAR10(root, True, verify), CheckedCIFAR10(root, False, verify)))


def resized(image_size: int, resize_size: int | None) -> int:
    """The reference resizes to 256 before cropping 224; keep that ratio unless told otherwise."""
    return resize_size if resize_size else round(image_size * 256 / 224)


def device_transform(images: torch.Tensor, resize: int, crop: int, train: bool) -> torch.Tensor:
    """The reference's transforms on a whole uint8 batch, on whatever device it is on: Resize to
    resize x resize, then a random (train) or center (eval) crop, then scale to [0, 1] floats.

    On the CPU, torchvision resizes uint8 natively, exactly as PIL does. Elsewhere it would convert
    the whole resized batch to float, round it back to uint8, crop, and convert again (about 3 GB of
    memory traffic per 512-image batch at 224 px), so there each crop window is interpolated
    straight from the small source images in one kernel (`resized_crop_float`)."""
    n, _, height, width = images.shape
    if train:
        top = torch.randint(0, resize - crop + 1, (n,), device=images.device)
        left = torch.randint(0, resize - crop + 1, (n,), device=images.device)
    else:  # torchvision's center_crop offset
        top = left = torch.full((n,), int(round((resize - crop) / 2.0)), device=images.device)
    if images.device.type == "cpu" or resize < max(height, width):  # and downscaling wants antialiasing
        return crop_windows(TF.resize(images, [resize, resize], antialias=True), top, left, crop).float().div_(255)
    return resized_crop_float(images, top, left, resize, crop).div_(255)


def crop_windows(images: torch.Tensor, top: torch.Tensor, left: torch.Tensor, crop: int) -> torch.Tensor:
    """images[i, :, top[i]:top[i]+crop, left[i]:left[i]+crop] for every i, in one indexing operation."""
    n, channels, device = images.shape[0], images.shape[1], images.device
    offsets = torch.arange(crop, device=device)
    rows = top.view(n, 1, 1, 1) + offsets.view(1, 1, crop, 1)
    cols = left.view(n, 1, 1, 1) + offsets.view(1, 1, 1, crop)
    batch = torch.arange(n, device=device).view(n, 1, 1, 1)
    channel = torch.arange(channels, device=device).view(1, channels, 1, 1)
    return images[batch, channel, rows, cols]


def resized_crop_float(images: torch.Tensor, top: torch.Tensor, left: torch.Tensor, resize: int, crop: int) -> torch.Tensor:
    """crop_windows(resize(images), ...) in float, without the resized batch: each output pixel is
    sampled bilinearly from the source at the position a resize to `resize` px would read it from
    (half-pixel centres, edges clamped: what torchvision's and PIL's bilinear upscaling compute)."""
    n, _, height, width = images.shape
    centres = torch.arange(crop, device=images.device, dtype=torch.float32) + 0.5
    # grid_sample (align_corners=False) reads source pixel ((g + 1) * size - 1) / 2 at normalized g, so
    # g = 2 * p / resize - 1 reads the source where pixel centre p of the resized image comes from
    ys = (top.view(n, 1, 1).float() + centres.view(1, crop, 1)) * (2.0 / resize) - 1.0
    xs = (left.view(n, 1, 1).float() + centres.view(1, 1, crop)) * (2.0 / resize) - 1.0
    grid = torch.stack(torch.broadcast_tensors(xs, ys), dim=-1)  # (n, crop, crop, (x, y))
    return F.grid_sample(images.float(), grid, mode="bilinear", padding_mode="border", align_corners=False)


class ImageDataModule(L.LightningDataModule):
    def __init__(
        self,
        name: str = "cifar10",
        batch_size: int = 256,
        root: str | None = "data",
        download: bool = True,
        verify: bool = True,
        val_size: int = 5000,
        split_seed: int = 42,
        image_size: int = 224,
        resize_size: int | None = None,
        resize_on: str = "device",
        num_workers: int = 3,
        pin_memory: bool = True,
        persistent_workers: bool = False,
        num_train_images: int = 50000,
        num_test_images: int = 10000,
        predict_batches: int = 0,
    ):
        super().__init__()
        self.name = name
        self.batch_size = batch_size
        self.root = Path(root).expanduser().resolve() if root else None
        self.download = download
        self.verify = verify
        self.val_size = val_size
        self.split_seed = split_seed
        self.image_size = image_size
        self.resize = resized(image_size, resize_size)
        self.resize_on = resize_on
        self.loader_kwargs = dict(
            num_workers=num_workers,
            pin_memory=pin_memory,
            persistent_workers=persistent_workers and num_workers > 0,
        )
        self.num_train_images = num_train_images
        self.num_test_images = num_test_images
        self.predict_batches = predict_batches  # mode=inference: full batches of test images, cycled

    def prepare_data(self) -> None:
        # Runs on one process per node: the only place that may download.
        if self.name == "cifar10" and not CheckedCIFAR10.present(str(self.root), self.verify):
            self._download_cifar10()

    def setup(self, stage: str) -> None:
        train, test = load_arrays(self.name, str(self.root) if self.root else None, self.verify,
                                  self.num_train_images, self.num_test_images, self.split_seed)
        n = len(train[1])
        order = torch.randperm(n, generator=torch.Generator().manual_seed(self.split_seed)).tolist()
        self.train_set = Subset(self._dataset(*train, train=True), order[: n - self.val_size])
        self.val_set = Subset(self._dataset(*train, train=False), order[n - self.val_size :])
        self.test_set = self._dataset(*test, train=False)

    def _dataset(self, data: np.ndarray, targets: list[int], train: bool) -> Dataset:
        if self.resize_on == "device":
            return TensorImages(data, targets)
        resize = transforms.Resize((self.resize, self.resize))
        crop = transforms.RandomCrop(self.image_size) if train else transforms.CenterCrop(self.image_size)
        return ArrayCIFAR10(data, targets, transforms.Compose([resize, crop, transforms.ToTensor()]))

    def _loader(self, dataset: Dataset, **kwargs) -> DataLoader:
        collate = {"collate_fn": batch_as_is} if self.resize_on == "device" else {}
        loader_kwargs = dict(self.loader_kwargs)
        if not torch.cuda.is_available():
            # page-locked memory speeds up copies to a GPU only; without one, torch warns at every loader
            loader_kwargs["pin_memory"] = False
        return DataLoader(dataset, batch_size=self.batch_size, **kwargs, **collate, **loader_kwargs)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, shuffle=True, drop_last=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set)

    def predict_dataloader(self) -> DataLoader:
        """`predict_batches` full batches of test images in order, starting over where the test set
        ends: every timed batch has the batch size, whatever the test set's size."""
        return self._loader(Cycled(self.test_set, self.predict_batches * self.batch_size))

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        if self.resize_on != "device":
            return batch
        images, labels = batch
        training = self.trainer is not None and self.trainer.training
        images = device_transform(images, self.resize, self.image_size, train=training)
        # Lightning converts floating-point inputs to a true precision's dtype (16-true, bf16-true,
        # 64-true) before the transfer, when these images were still uint8: convert them now.
        precision = getattr(self.trainer, "precision_plugin", None)
        return (precision.convert_input(images) if precision is not None else images), labels

    def _download_cifar10(self) -> None:
        ways_out = (f"use data.root=<a folder that holds CIFAR-10's python files, cifar-10-batches-py/> (place them in "
                    f"{self.root}), or data=synthetic")
        if not self.download:
            raise UserError(f"data.root={self.root} holds no CIFAR-10 and data.download=false; {ways_out}.")
        try:
            CIFAR10(str(self.root), train=True, download=True)
        except Exception as exc:  # urllib raises several types for "no network"
            raise UserError(
                f"data.root={self.root} holds no CIFAR-10 and it could not be downloaded "
                f"({type(exc).__name__}: {exc}); {ways_out}."
            ) from exc
