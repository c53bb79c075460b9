"""What a user's own code looks like: it follows Lightning's conventions, not bsbench's."""

import lightning as L
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset


class TinyNet(L.LightningModule):
    """A small convolutional classifier with Lightning's example_input_array and its own optimizer."""

    def __init__(self, width: int = 8, num_classes: int = 5, image_size: int = 16, lr: float = 1e-3):
        super().__init__()
        self.save_hyperparameters()
        self.body = torch.nn.Sequential(torch.nn.Conv2d(3, width, 3, padding=1), torch.nn.ReLU(),
                                        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
        self.head = torch.nn.Linear(width, num_classes)
        self.example_input_array = torch.zeros(1, 3, image_size, image_size)

    def forward(self, x):
        return self.head(self.body(x))

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.cross_entropy(self(x), y)
        self.log("my_loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", F.cross_entropy(self(x), y))

    def test_step(self, batch, batch_idx):
        x, y = batch
        self.log("test_acc", (self(x).argmax(1) == y).float().mean())

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)


class TinyNetNoExample(TinyNet):
    """The same network with no example_input_array and no num_classes hyperparameter."""

    def __init__(self, width: int = 8):
        L.LightningModule.__init__(self)
        self.body = torch.nn.Sequential(torch.nn.Conv2d(3, width, 3, padding=1), torch.nn.ReLU(),
                                        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
        self.head = torch.nn.Linear(width, 7)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=1e-3)


class TinyData(L.LightningDataModule):
    """Random images in memory, split into train/val/test; DataLoaders at self.batch_size. The
    training set's size is not a multiple of most batch sizes: its last batch is short."""

    def __init__(self, batch_size: int = 16, samples: int = 200, image_size: int = 16, num_classes: int = 5):
        super().__init__()
        self.batch_size = batch_size
        self.samples, self.image_size, self.num_classes = samples, image_size, num_classes

    def setup(self, stage=None):
        g = torch.Generator().manual_seed(0)
        x = torch.rand(self.samples, 3, self.image_size, self.image_size, generator=g)
        y = torch.randint(0, self.num_classes, (self.samples,), generator=g)
        n = self.samples // 5
        self.train_set = TensorDataset(x[2 * n:], y[2 * n:])
        self.val_set = TensorDataset(x[:n], y[:n])
        self.test_set = TensorDataset(x[n:2 * n], y[n:2 * n])

    def train_dataloader(self):
        return DataLoader(self.train_set, batch_size=self.batch_size, shuffle=True)

    def val_dataloader(self):
        return DataLoader(self.val_set, batch_size=self.batch_size)

    def test_dataloader(self):
        return DataLoader(self.test_set, batch_size=self.batch_size)


class NoBatchSize(TinyData):
    """A datamodule whose loaders use a batch size fixed in code: nothing for bsbench to set."""

    def __init__(self):
        L.LightningDataModule.__init__(self)
        self.samples, self.image_size, self.num_classes = 200, 16, 5

    def train_dataloader(self):
        return DataLoader(self.train_set, batch_size=16)


class NotADataModule:
    """A class that is not a LightningDataModule."""


class TokenNet(L.LightningModule):
    """A module on token ids (integer inputs) whose batches are dicts: bsbench_batch_size says how many."""

    def __init__(self, vocab_size: int = 50, length: int = 12, num_classes: int = 3):
        super().__init__()
        self.save_hyperparameters()
        self.embed = torch.nn.EmbeddingBag(vocab_size, 16)
        self.head = torch.nn.Linear(16, num_classes)
        self.example_input_array = torch.zeros(1, length, dtype=torch.long)

    def forward(self, tokens):
        return self.head(self.embed(tokens))

    def training_step(self, batch, batch_idx):
        return F.cross_entropy(self(batch["tokens"]), batch["label"])

    def predict_step(self, batch, batch_idx):
        return self(batch["tokens"])

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=1e-3)

    def bsbench_batch_size(self, batch) -> int:
        return len(batch["label"])


class TokenData(L.LightningDataModule):
    """Dict batches ({"label": ..., "tokens": ...}), batch size as a hyperparameter."""

    def __init__(self, batch_size: int = 8, samples: int = 96, vocab_size: int = 50, length: int = 12):
        super().__init__()
        self.save_hyperparameters()

    def setup(self, stage=None):
        g = torch.Generator().manual_seed(0)
        self.tokens = torch.randint(0, self.hparams.vocab_size, (self.hparams.samples, self.hparams.length), generator=g)
        self.labels = torch.randint(0, 3, (self.hparams.samples,), generator=g)

    def train_dataloader(self):
        items = [{"label": y, "tokens": t} for t, y in zip(self.tokens, self.labels)]
        return DataLoader(items, batch_size=self.hparams.batch_size)


class BadBatch(TinyData):
    """A datamodule whose constructor fails: the user's bug, named before any job runs."""

    def __init__(self, batch_size: int = 16):
        super().__init__(batch_size)
        raise RuntimeError("cannot reach the data server")


class Scalar(L.LightningModule):
    """A module whose step does not look at its batch (a smoke test of someone's own)."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(3))

    def training_step(self, batch, batch_idx):
        return (self.w ** 2).sum()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


class NoTensorData(L.LightningDataModule):
    """Batches of plain Python numbers: nothing in them says how many samples they hold."""

    def __init__(self, batch_size: int = 4):
        super().__init__()
        self.batch_size = batch_size

    def train_dataloader(self):
        return DataLoader(list(range(64)), batch_size=self.batch_size, collate_fn=list)
