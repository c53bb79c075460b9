"""bsbench's LightningModule: a torchvision (or timm) classifier trained from scratch, as in the reference.
A module of your own replaces it with model._target_ (bsbench.training.parts)."""

import lightning as L
import torch
import torch.nn.functional as F
import torchvision
from torchmetrics.classification import MulticlassAccuracy


def size_keywords(arch: str, image_size: int) -> dict:
    """What a family's builder must be told of the input size: a vision transformer's position
    embeddings (and MaxViT's attention windows) are made for one size, 224 px unless told."""
    if arch.startswith("vit_"):
        return {"image_size": image_size}
    if arch.startswith("maxvit_"):
        return {"input_size": (image_size, image_size)}
    return {}


TIMM = "timm:"  # model.arch=timm:<name>: any timm classifier (pip install "bsbench[timm]")


def network(arch: str, num_classes: int, image_size: int = 224) -> torch.nn.Module:
    """The torchvision (or timm) classifier for image_size px inputs, untrained (the FLOP count and the
    config check build the same one on the meta device)."""
    if arch.startswith(TIMM):
        return timm_network(arch[len(TIMM):], num_classes, image_size)
    return torchvision.models.get_model(arch, weights=None, num_classes=num_classes,
                                        **size_keywords(arch, image_size))


def timm_network(name: str, num_classes: int, image_size: int) -> torch.nn.Module:
    import timm  # optional: bsbench.job.validate names the extra where it is missing

    try:  # a vision transformer's position embeddings are made for one size: tell it which
        return timm.create_model(name, pretrained=False, num_classes=num_classes, img_size=image_size)
    except TypeError:  # a convolutional network takes any size, and no img_size argument
        return timm.create_model(name, pretrained=False, num_classes=num_classes)


class ImageClassifier(L.LightningModule):
    def __init__(
        self,
        arch: str = "mobilenet_v3_large",
        num_classes: int = 10,
        image_size: int = 224,
        lr: float = 5e-4,
        fused_adam: bool = False,
        train_acc_eval_forward: bool = False,
        channels_last: bool = False,
        log_train_loss: bool = True,
    ):
        super().__init__()
        self.save_hyperparameters()
        self.net = network(arch, num_classes, image_size)
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.net.to(memory_format=self.memory_format)
        # micro average = the fraction of images classified correctly, as the reference reports it
        self.val_acc = MulticlassAccuracy(num_classes, average="micro")
        self.test_acc = MulticlassAccuracy(num_classes, average="micro")
        if train_acc_eval_forward:
            self.train_acc = MulticlassAccuracy(num_classes, average="micro")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.contiguous(memory_format=self.memory_format))

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.cross_entropy(self(x), y)
        if self.hparams.log_train_loss:  # mode=throughput turns it off: no per-step logging there
            self.log("train_loss", loss)
        if self.hparams.train_acc_eval_forward:
            # The reference's second forward pass, in eval mode, only to log training accuracy.
            self.net.eval()
            with torch.no_grad():
                self.train_acc(self(x).argmax(1), y)
            self.net.train()
            self.log("train_acc", self.train_acc, on_step=False, on_epoch=True)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        logits = self(x)
        self.log("val_loss", F.cross_entropy(logits, y), sync_dist=True)
        self.val_acc(logits.argmax(1), y)
        self.log("val_acc", self.val_acc, prog_bar=True)

    def test_step(self, batch, batch_idx):
        x, y = batch
        self.test_acc(self(x).argmax(1), y)
        self.log("test_acc", self.test_acc)

    def predict_step(self, batch, batch_idx):
        """mode=inference: the forward pass alone (Lightning runs it in eval mode, without gradients)."""
        return self(batch[0])

    def configure_optimizers(self):
        # fused: one kernel for the whole update and, under 16-mixed, GradScaler hands the inf check to
        # the optimizer instead of reading it on the host (a .item() and so a device sync every step)
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr, fused=self.hparams.fused_adam or None)
