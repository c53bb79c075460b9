"""A user's code as the lightning-hydra-template writes it: a LightningModule whose constructor takes the
network (`net`) and a partial optimizer and scheduler, built by Hydra from nested `_target_` configs;
torchmetrics updated in training_step and logged as metric objects; a datamodule whose `batch_size` is
global and divided by the world size in `setup`, with `num_workers` and `pin_memory`."""

import lightning as L
import torch
from torch.utils.data import DataLoader, TensorDataset
from torchmetrics import MaxMetric, MeanMetric
from torchmetrics.classification.accuracy import Accuracy


class SimpleDenseNet(torch.nn.Module):
    def __init__(self, input_size: int = 3 * 16 * 16, lin1_size: int = 32, output_size: int = 5):
        super().__init__()
        self.model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(input_size, lin1_size),
                                         torch.nn.BatchNorm1d(lin1_size), torch.nn.ReLU(),
                                         torch.nn.Linear(lin1_size, output_size))

    def forward(self, x):
        return self.model(x)


class LitModule(L.LightningModule):
    def __init__(self, net: torch.nn.Module, optimizer, scheduler=None, compile: bool = False, num_classes: int = 5):
        super().__init__()
        self.save_hyperparameters(logger=False, ignore=["net"])
        self.net = net
        self.criterion = torch.nn.CrossEntropyLoss()
        self.train_acc = Accuracy(task="multiclass", num_classes=num_classes)
        self.val_acc = Accuracy(task="multiclass", num_classes=num_classes)
        self.test_acc = Accuracy(task="multiclass", num_classes=num_classes)
        self.train_loss, self.val_loss, self.test_loss = MeanMetric(), MeanMetric(), MeanMetric()
        self.val_acc_best = MaxMetric()

    def forward(self, x):
        return self.net(x)

    def model_step(self, batch):
        x, y = batch
        logits = self.forward(x)
        return self.criterion(logits, y), logits.argmax(dim=1), y

    def training_step(self, batch, batch_idx):
        loss, preds, targets = self.model_step(batch)
        self.train_loss(loss)
        self.train_acc(preds, targets)
        self.log("train/loss", self.train_loss, on_step=False, on_epoch=True, prog_bar=True)
        self.log("train/acc", self.train_acc, on_step=False, on_epoch=True, prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx):
        loss, preds, targets = self.model_step(batch)
        self.val_loss(loss)
        self.val_acc(preds, targets)
        self.log("val/loss", self.val_loss, on_step=False, on_epoch=True)
        self.log("val/acc", self.val_acc, on_step=False, on_epoch=True)

    def test_step(self, batch, batch_idx):
        loss, preds, targets = self.model_step(batch)
        self.test_loss(loss)
        self.test_acc(preds, targets)
        self.log("test/acc", self.test_acc, on_step=False, on_epoch=True)

    def configure_optimizers(self):
        optimizer = self.hparams.optimizer(params=self.trainer.model.parameters())
        if self.hparams.scheduler is not None:
            scheduler = self.hparams.scheduler(optimizer=optimizer)
            return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}
        return {"optimizer": optimizer}


class NoStep(LitModule):
    """A training_step that returns nothing: Lightning skips the backward and the optimizer's step."""

    def training_step(self, batch, batch_idx):
        super().training_step(batch, batch_idx)
        return None


class DataModule(L.LightningDataModule):
    """Random images in memory; `batch_size` is the global batch, divided by the world size in setup."""

    def __init__(self, data_dir: str = "data/", batch_size: int = 64, num_workers: int = 0, pin_memory: bool = False,
                 samples: int = 256, image_size: int = 16, num_classes: int = 5):
        super().__init__()
        self.save_hyperparameters(logger=False)
        self.data_train = self.data_val = self.data_test = None
        self.batch_size_per_device = batch_size

    def prepare_data(self):
        """The template's downloads its data set here (Lightning calls it behind a barrier of every rank); this
        one has nothing to fetch."""

    def setup(self, stage=None):
        if self.trainer is not None:
            if self.hparams.batch_size % self.trainer.world_size != 0:
                raise RuntimeError(f"Batch size ({self.hparams.batch_size}) is not divisible by the number of devices "
                                   f"({self.trainer.world_size}).")
            self.batch_size_per_device = self.hparams.batch_size // self.trainer.world_size
        if self.data_train is None:
            g = torch.Generator().manual_seed(0)
            size, n = self.hparams.image_size, self.hparams.samples
            x = torch.rand(n, 3, size, size, generator=g)
            y = torch.randint(0, self.hparams.num_classes, (n,), generator=g)
            fifth = n // 5
            self.data_train = TensorDataset(x[2 * fifth:], y[2 * fifth:])
            self.data_val = TensorDataset(x[:fifth], y[:fifth])
            self.data_test = TensorDataset(x[fifth:2 * fifth], y[fifth:2 * fifth])

    def _loader(self, dataset, shuffle: bool) -> DataLoader:
        return DataLoader(dataset, batch_size=self.batch_size_per_device, num_workers=self.hparams.num_workers,
                          pin_memory=self.hparams.pin_memory, shuffle=shuffle)

    def train_dataloader(self):
        return self._loader(self.data_train, True)

    def val_dataloader(self):
        return self._loader(self.data_val, False)

    def test_dataloader(self):
        return self._loader(self.data_test, False)


class _Slowed(torch.utils.data.Dataset):
    def __init__(self, dataset, transform_ms: float):
        self.dataset, self.seconds = dataset, transform_ms / 1000

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, i):
        import time

        time.sleep(self.seconds)  # a per-sample transform on the CPU: decoding, augmenting
        return self.dataset[i]


class SlowData(DataModule):
    """The datamodule above with a per-sample transform of `transform_ms` milliseconds in its training set:
    the loader, not the model, sets the pace."""

    def __init__(self, transform_ms: float = 2.0, batch_size: int = 64, image_size: int = 16, samples: int = 256,
                 num_workers: int = 0, pin_memory: bool = False):
        super().__init__(batch_size=batch_size, image_size=image_size, samples=samples, num_workers=num_workers,
                         pin_memory=pin_memory)
        self.transform_ms = transform_ms

    def train_dataloader(self):
        return self._loader(_Slowed(self.data_train, self.transform_ms), True)


class FixedLoader(DataModule):
    """A datamodule whose training loader ignores the batch size it keeps: always 8 per batch."""

    def train_dataloader(self):
        return DataLoader(self.data_train, batch_size=8, shuffle=True)
