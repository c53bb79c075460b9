"""FLOPs of the network per image: one training step (forward and backward) and one inference forward,
counted once per configuration on the meta device (shapes only: nothing runs, nothing is allocated);
where a module's step cannot run there (a torchmetrics update reads a value, a custom op), on one real
warm-up training step instead (StepFlops).

torch's FlopCounterMode counts matrix multiplications and convolutions (2 FLOPs per multiply-add;
activations, normalization, bias and the optimizer's elementwise work are not counted, as in every
MFU figure). Its formula for a convolution's backward ignores `groups`: a 64-channel depthwise 3x3
convolution's backward counts 65 times its forward, which makes MobileNet's training FLOPs 9 times
too high. bsbench replaces that formula: each gradient a convolution's backward computes (of its
input, of its weight) costs what its forward costs, grouped or not."""

import functools
import warnings

import lightning as L
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode, conv_flop_count

from bsbench.core.errors import first_line
from bsbench.training.model import network
from bsbench.training.parts import samples_in

# Per image from a batch of two: every counted operation is linear in the batch, and batch norm in
# training mode refuses a batch of one where a feature map is 1x1.
_BATCH = 2


def conv_backward_flops(grad_out_shape, x_shape, w_shape, _bias, _stride, _padding, _dilation, transposed,
                        _output_padding, _groups, output_mask, out_shape=None, **kwargs) -> int:
    """aten.convolution_backward: the forward's cost for each gradient asked for (output_mask: input, weight)."""
    forward = conv_flop_count(x_shape, w_shape, grad_out_shape, transposed)
    return forward * (bool(output_mask[0]) + bool(output_mask[1]))


CUSTOM_MAPPING = {torch.ops.aten.convolution_backward: conv_backward_flops}


def _counted(step) -> int:
    counter = FlopCounterMode(display=False, custom_mapping=CUSTOM_MAPPING)
    with counter:
        step()
    return counter.get_total_flops()


def count_model(net: torch.nn.Module, image_size: int, eval_forward: bool = False) -> dict:
    """FLOPs per image of `net` (on the meta device) for 3 x image_size x image_size inputs: a training
    step's (forward, backward and, with `eval_forward`, the reference's extra eval-mode forward) and
    an inference forward's."""
    x = torch.empty(_BATCH, 3, image_size, image_size, device="meta")

    def train_step():
        net.train()
        logits = net(x)
        F.cross_entropy(logits, torch.zeros(_BATCH, dtype=torch.long, device="meta")).backward()
        if eval_forward:
            infer()

    def infer():
        net.eval()
        with torch.no_grad():
            net(x)

    train, inference = _counted(train_step), _counted(infer)
    net.train()
    return {"train_flops_per_sample": train // _BATCH, "inference_flops_per_sample": inference // _BATCH}


@functools.lru_cache(maxsize=None)
def count(arch: str, num_classes: int, image_size: int, eval_forward: bool) -> dict:
    """count_model() for the classifier bsbench trains, built on the meta device; a model that cannot
    be counted gives nulls and the reason (`flops_error`), never a failed run."""
    try:
        with torch.device("meta"):
            net = network(arch, num_classes, image_size)
        return {**count_model(net, image_size, eval_forward), "flops_error": None}
    except Exception as exc:  # the count is a label on the run, not the run: report why it is missing
        return uncounted(first_line(exc))


def uncounted(reason: str) -> dict:
    return {"train_flops_per_sample": None, "inference_flops_per_sample": None, "flops_error": reason}


def count_step(module, batch) -> dict:
    """FLOPs per sample of any LightningModule (on the meta device) on `batch`: its own training_step
    and the loss's backward, and its predict_step (mode=inference's forward pass)."""
    def train_step():
        module.train()
        out = module.training_step(batch, 0)
        loss = out["loss"] if isinstance(out, dict) else out
        loss.backward()

    def infer():
        module.eval()
        with torch.no_grad():
            module.predict_step(batch, 0)

    with warnings.catch_warnings():  # self.log() with no Trainer attached: nothing to log, no harm
        warnings.simplefilter("ignore")
        train, inference = _counted(train_step), _counted(infer)
    module.train()
    samples = samples_in(module, batch)
    return {"train_flops_per_sample": train // samples, "inference_flops_per_sample": inference // samples,
            "flops_error": None}


class StepFlops(L.Callback):
    """FLOPs per sample of one real training step of the run (its forward, backward and optimizer step under
    FlopCounterMode, which counts the same operations as the meta count): step `step`, the last warm-up step,
    outside the timed ones, so that the counter's overhead slows no timed step. The count where the meta
    device cannot run a module's training_step."""

    def __init__(self, step: int):
        self.step, self.seen = step, 0
        self.flops_per_sample: int | None = None
        self._counter = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self.seen == self.step and self.flops_per_sample is None:
            self._samples = samples_in(pl_module, batch)
            self._counter = FlopCounterMode(display=False, custom_mapping=CUSTOM_MAPPING)
            self._counter.__enter__()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self._counter is not None:
            self._stop()
            self.flops_per_sample = self._total // self._samples if self._samples else None
        self.seen += 1

    def _stop(self) -> None:
        self._counter.__exit__(None, None, None)
        self._total, self._counter = self._counter.get_total_flops(), None

    def on_exception(self, trainer, pl_module, exception):
        if self._counter is not None:
            self._stop()
