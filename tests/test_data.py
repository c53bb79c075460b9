import numpy as np
import pytest
import torch
from lightning.pytorch.plugins.precision import DoublePrecision, HalfPrecision, MixedPrecision
from torchvision.transforms.v2 import functional as TF

from bsbench.training.data import ImageDataModule, crop_windows, device_transform, load_arrays, resized_crop_float
from conftest import write_cifar10_format


class Stage:
    """Stands in for the Trainer in on_after_batch_transfer: training or not, and its precision plugin."""

    def __init__(self, training: bool, precision_plugin=None):
        self.training = training
        self.precision_plugin = precision_plugin


def first_batches(dm):
    """The first train, val and test batch, as the model receives them."""
    dm.prepare_data()
    dm.setup("fit")
    out = []
    for loader, training in ((dm.train_dataloader(), True), (dm.val_dataloader(), False), (dm.test_dataloader(), False)):
        dm.trainer = Stage(training)
        out.append(dm.on_after_batch_transfer(next(iter(loader)), 0))
    return out


def module(**kwargs):
    defaults = dict(name="synthetic", root=None, num_train_images=100, num_test_images=20, val_size=20, batch_size=8,
                    image_size=48, num_workers=0, pin_memory=False)
    return ImageDataModule(**{**defaults, **kwargs})


def test_synthetic_has_cifar10_sample_counts_by_default():
    dm = ImageDataModule(name="synthetic", root=None, num_workers=0, image_size=32)
    dm.setup("fit")
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (45000, 5000, 10000)
    images, _ = dm.train_set.dataset.__getitems__([0, 1])
    assert images.dtype == torch.uint8 and images.shape == (2, 3, 32, 32)
    assert set(dm.train_set.dataset.targets.tolist()) == set(range(10))


@pytest.mark.parametrize("resize_on", ["device", "cpu"])
def test_synthetic_and_cifar10_files_give_the_same_batches(tmp_path, resize_on):
    root = write_cifar10_format(tmp_path, train_per_batch=20, test_images=20)
    real = module(name="cifar10", root=str(root), verify=False, download=False, resize_on=resize_on)
    fake = module(resize_on=resize_on)
    for (xr, yr), (xf, yf) in zip(first_batches(real), first_batches(fake)):
        assert xr.shape == xf.shape == (8, 3, 48, 48)
        assert xr.dtype == xf.dtype == torch.float32 and yr.dtype == yf.dtype == torch.int64
        assert 0.0 <= xr.min() and xr.max() <= 1.0 and 0.0 <= xf.min() and xf.max() <= 1.0
    assert (len(real.train_set), len(real.val_set), len(real.test_set)) == (80, 20, 20)


def test_both_resize_paths_give_the_same_shapes_dtypes_and_ranges():
    device_batches, cpu_batches = first_batches(module(resize_on="device")), first_batches(module(resize_on="cpu"))
    for (xd, yd), (xc, yc) in zip(device_batches, cpu_batches):
        assert xd.shape == xc.shape and xd.dtype == xc.dtype == torch.float32 and yd.dtype == yc.dtype
        assert 0.0 <= xd.min() and xd.max() <= 1.0


def test_device_eval_transform_matches_the_reference_pil_path():
    # Tolerance: one intensity level (1/255). torchvision's uint8 bilinear resize reproduces PIL's
    # exactly on the CPU; float kernels (the path off the CPU) do not round, off by at most one level.
    device_dm, cpu_dm = module(resize_on="device", image_size=224), module(resize_on="cpu", image_size=224)
    device_dm.setup("fit")
    cpu_dm.setup("fit")
    images, _ = device_dm.test_set.__getitems__(list(range(8)))
    on_device = device_transform(images, 256, 224, train=False)
    reference = torch.stack([cpu_dm.test_set[i][0] for i in range(8)])
    assert (on_device - reference).abs().max() <= 1 / 255 + 1e-6
    centre = torch.full((8,), 16)
    unrounded = resized_crop_float(images, centre, centre, 256, 224) / 255  # what CUDA runs
    assert unrounded.dtype == torch.float32 and (unrounded - reference).abs().max() <= 1 / 255 + 1e-6


def test_the_float_path_samples_each_crop_window_as_resize_then_crop_would():
    torch.manual_seed(1)
    images = torch.randint(0, 256, (6, 3, 32, 32), dtype=torch.uint8).permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2)
    top, left = torch.randint(0, 256 - 224 + 1, (6,)), torch.randint(0, 256 - 224 + 1, (6,))
    reference = crop_windows(TF.resize(images.float(), [256, 256], antialias=True), top, left, 224)
    sampled = resized_crop_float(images, top, left, 256, 224)  # from the channels-last view, no resized batch
    assert sampled.shape == (6, 3, 224, 224) and (sampled - reference).abs().max() < 1e-3


def test_device_random_crop_picks_a_window_per_image():
    torch.manual_seed(0)
    images = torch.arange(4 * 3 * 10 * 10, dtype=torch.int64).remainder(251).to(torch.uint8).view(4, 3, 10, 10)
    crops = device_transform(images, resize=10, crop=6, train=True)
    assert crops.shape == (4, 3, 6, 6)
    full = images.float() / 255
    for crop, image in zip(crops, full):  # every crop is a window of its own image
        windows = [(t, l) for t in range(5) for l in range(5) if torch.equal(image[:, t:t + 6, l:l + 6], crop)]
        assert len(windows) == 1
    offsets = {tuple(torch.nonzero(full[i, 0] == crops[i, 0, 0, 0])[0].tolist()) for i in range(4)}
    assert len(offsets) > 1  # not one window for the whole batch


@pytest.mark.parametrize("plugin, dtype", [
    (HalfPrecision("bf16-true"), torch.bfloat16), (HalfPrecision("16-true"), torch.float16),
    (DoublePrecision(), torch.float64), (MixedPrecision("bf16-mixed", "cpu"), torch.float32), (None, torch.float32),
])
def test_device_batches_arrive_in_the_precisions_input_dtype(plugin, dtype):
    # Lightning converts a batch to a true precision's dtype before the transfer, while these images
    # are still uint8: the device path converts them once they are floats
    dm = module(resize_on="device")
    dm.setup("fit")
    dm.trainer = Stage(True, plugin)
    images, labels = dm.on_after_batch_transfer(next(iter(dm.train_dataloader())), 0)
    assert images.dtype == dtype and labels.dtype == torch.int64


def test_split_is_fixed_by_split_seed_not_by_the_global_seed():
    def val_indices(global_seed, split_seed=42):
        torch.manual_seed(global_seed)
        dm = module(split_seed=split_seed, num_train_images=200, val_size=50)
        dm.setup("fit")
        return dm.val_set.indices

    assert val_indices(1) == val_indices(2)
    assert val_indices(1) != val_indices(1, split_seed=7)


def test_the_dataset_is_decoded_once_for_all_jobs_of_a_sweep(tmp_path):
    root = write_cifar10_format(tmp_path, train_per_batch=20, test_images=20)
    load_arrays.cache_clear()
    first = module(name="cifar10", root=str(root), verify=False, download=False, batch_size=8)
    second = module(name="cifar10", root=str(root), verify=False, download=False, batch_size=16)
    first.setup("fit")
    second.setup("fit")
    assert load_arrays.cache_info().misses == 1 and load_arrays.cache_info().hits == 1
    assert np.shares_memory(first.train_set.dataset.images.numpy(), second.train_set.dataset.images.numpy())


def test_inference_batches_are_full_whatever_the_test_sets_size():
    dm = module(num_test_images=10, batch_size=4, predict_batches=3)
    dm.setup("predict")
    batches = list(dm.predict_dataloader())
    assert [len(labels) for _, labels in batches] == [4, 4, 4]  # the 10 test images, cycled: 4, 4, 2 + 2 again
    images = torch.cat([x for x, _ in batches])
    assert torch.equal(images[10:], images[:2])
