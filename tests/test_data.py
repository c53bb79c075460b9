import torch

from bsbench.data import ImageDataModule
from conftest import write_cifar10_format


def _first_batches(dm):
    dm.prepare_data()
    dm.setup("fit")
    dm.setup("test")
    return next(iter(dm.train_dataloader())), next(iter(dm.val_dataloader())), next(iter(dm.test_dataloader()))


def test_synthetic_has_cifar10_sample_counts_by_default():
    dm = ImageDataModule(name="synthetic", root=None, num_workers=0, image_size=32)
    dm.setup("fit")
    dm.setup("test")
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (45000, 5000, 10000)
    data = dm.train_set.dataset.data
    assert data.dtype.name == "uint8" and data.shape[1:] == (32, 32, 3)
    assert set(dm.train_set.dataset.targets) == set(range(10))


def test_synthetic_and_cifar10_files_give_the_same_batches(tmp_path):
    root = write_cifar10_format(tmp_path, train_per_batch=20, test_images=20)
    common = dict(batch_size=8, val_size=20, image_size=48, num_workers=0, pin_memory=False)
    real = ImageDataModule(name="cifar10", root=str(root), verify=False, download=False, **common)
    fake = ImageDataModule(name="synthetic", root=None, num_train_images=100, num_test_images=20, **common)
    for (xr, yr), (xf, yf) in zip(_first_batches(real), _first_batches(fake)):
        assert xr.shape == xf.shape == (8, 3, 48, 48)
        assert xr.dtype == xf.dtype == torch.float32 and yr.dtype == yf.dtype == torch.int64
        assert 0.0 <= xr.min() and xr.max() <= 1.0 and 0.0 <= xf.min() and xf.max() <= 1.0
    assert (len(real.train_set), len(real.val_set), len(real.test_set)) == (80, 20, 20)


def test_split_is_fixed_by_split_seed_not_by_the_global_seed():
    def val_indices(global_seed, split_seed=42):
        torch.manual_seed(global_seed)
        dm = ImageDataModule(name="synthetic", root=None, num_train_images=200, val_size=50, split_seed=split_seed)
        dm.setup("fit")
        return dm.val_set.indices

    assert val_indices(1) == val_indices(2)
    assert val_indices(1) != val_indices(1, split_seed=7)


def test_training_images_are_randomly_cropped_and_evaluation_images_are_not():
    dm = ImageDataModule(name="synthetic", root=None, num_train_images=100, val_size=20, image_size=32, resize_size=64)
    dm.setup("fit")
    train_reads = [dm.train_set[0][0] for _ in range(5)]
    assert any(not torch.equal(train_reads[0], t) for t in train_reads[1:])
    assert torch.equal(dm.val_set[0][0], dm.val_set[0][0])
    # train and val views share one decoded copy of the images
    assert dm.train_set.dataset.data is dm.val_set.dataset.data
