"""CIFAR-10 (or a synthetic stand-in with the same shapes) as a LightningDataModule.

The transforms and the split are the reference's: train Resize -> RandomCrop -> ToTensor, eval
Resize -> CenterCrop -> ToTensor; 45,000/5,000 train/val from CIFAR-10's training set with a fixed
generator; the 10,000 test images for inference. Validation uses the eval transform (the reference
reused the training transform there; accuracy, not speed, is what that changes).
"""

import copy
from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Subset
from torchvision import transforms
from torchvision.datasets import CIFAR10
from torchvision.datasets.utils import check_integrity
from torchvision.datasets.vision import VisionDataset

from bsbench.errors import UserError

CIFAR10_SHAPE = (32, 32, 3)
CIFAR10_CLASSES = 10
DATASETS = ("cifar10", "synthetic")


class SyntheticCIFAR10(CIFAR10):
    """CIFAR-10's own item path (uint8 HWC array -> PIL -> transform) over random images.

    Subclassing CIFAR10 keeps __getitem__ identical to the real dataset, so loader cost per image is
    the same; only where `data` and `targets` come from differs.
    """

    def __init__(self, num_images: int, seed: int, transform=None):
        VisionDataset.__init__(self, root=None, transform=transform)
        rng = np.random.default_rng(seed)
        self.data = rng.integers(0, 256, size=(num_images, *CIFAR10_SHAPE), dtype=np.uint8)
        self.targets = rng.integers(0, CIFAR10_CLASSES, size=num_images).tolist()


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


def with_transform(dataset: CIFAR10, transform) -> CIFAR10:
    """A view of `dataset` with another transform, sharing its decoded images (no second load)."""
    view = copy.copy(dataset)
    view.transform = transform
    return view


def resized(image_size: int, resize_size: int | None) -> int:
    """The reference resizes to 256 before cropping 224; keep that ratio unless told otherwise."""
    return resize_size if resize_size else round(image_size * 256 / 224)


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
        num_workers: int = 3,
        pin_memory: bool = True,
        persistent_workers: bool = False,
        num_train_images: int = 50000,
        num_test_images: int = 10000,
    ):
        super().__init__()
        self.name = name
        self.batch_size = batch_size
        self.root = Path(root).expanduser().resolve() if root else None
        self.download = download
        self.verify = verify
        self.val_size = val_size
        self.split_seed = split_seed
        resize = transforms.Resize((resized(image_size, resize_size),) * 2)
        self.train_transform = transforms.Compose([resize, transforms.RandomCrop(image_size), transforms.ToTensor()])
        self.eval_transform = transforms.Compose([resize, transforms.CenterCrop(image_size), transforms.ToTensor()])
        self.loader_kwargs = dict(
            num_workers=num_workers,
            pin_memory=pin_memory,
            persistent_workers=persistent_workers and num_workers > 0,
        )
        self.num_train_images = num_train_images
        self.num_test_images = num_test_images

    def prepare_data(self) -> None:
        # Runs on one process per node: the only place that may download.
        if self.name == "cifar10" and not CheckedCIFAR10.present(str(self.root), self.verify):
            self._download_cifar10()

    def setup(self, stage: str) -> None:
        if stage == "fit":
            train_full = self._dataset(train=True)
            n = len(train_full)
            order = torch.randperm(n, generator=torch.Generator().manual_seed(self.split_seed)).tolist()
            self.train_set = Subset(with_transform(train_full, self.train_transform), order[: n - self.val_size])
            self.val_set = Subset(with_transform(train_full, self.eval_transform), order[n - self.val_size :])
        if stage == "test":
            self.test_set = with_transform(self._dataset(train=False), self.eval_transform)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.train_set, self.batch_size, shuffle=True, drop_last=True, **self.loader_kwargs)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_set, self.batch_size, **self.loader_kwargs)

    def test_dataloader(self) -> DataLoader:
        return DataLoader(self.test_set, self.batch_size, **self.loader_kwargs)

    def _dataset(self, train: bool) -> CIFAR10:
        if self.name == "synthetic":
            n = self.num_train_images if train else self.num_test_images
            return SyntheticCIFAR10(n, seed=self.split_seed + int(train))
        return CheckedCIFAR10(str(self.root), train=train, verify=self.verify)

    def _download_cifar10(self) -> None:
        ways_out = (
            f"place the CIFAR-10 python files (cifar-10-batches-py/) in {self.root} "
            "or run with data=synthetic"
        )
        if not self.download:
            raise UserError(f"CIFAR-10 was not found in {self.root} and data.download=false: {ways_out}.")
        try:
            CIFAR10(str(self.root), train=True, download=True)
        except Exception as exc:  # urllib raises several types for "no network"
            raise UserError(
                f"CIFAR-10 was not found in {self.root} and could not be downloaded "
                f"({type(exc).__name__}: {exc}): {ways_out}."
            ) from exc
