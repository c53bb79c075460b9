"""A user's package, outside bsbench: a small LightningModule and LightningDataModule as someone would
write them, reached through PYTHONPATH (tests/helpers), so that DDP ranks import it as they would a
user's. bsbench knows nothing of these classes but their import paths."""

from toy.models import (BadBatch, NoBatchSize, NoTensorData, NotADataModule, Scalar, TinyData, TinyNet,
                        TinyNetNoExample, TokenData, TokenNet)

__all__ = ["BadBatch", "NoBatchSize", "NoTensorData", "NotADataModule", "Scalar", "TinyData", "TinyNet",
           "TinyNetNoExample", "TokenData", "TokenNet"]
