"""Whether training stayed finite: a run whose loss went to NaN or infinity still has valid timings,
but its accuracy means nothing, and the report says so."""

import lightning as L
import torch

# ddp_spawn trains in child processes: the count travels back in callback_metrics (as bsbench.training.timing)
COUNT_KEY = "bsbench_nonfinite_loss_steps"


class LossWatch(L.Callback):
    """Counts the training steps whose loss was not finite. The count is kept on the device and read
    once, when training ends, so no step waits for it."""

    def __init__(self):
        self._count: torch.Tensor | None = None
        self.nonfinite_steps = 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if isinstance(loss, torch.Tensor):
            bad = torch.logical_not(torch.isfinite(loss.detach())).sum()
            self._count = bad if self._count is None else self._count + bad

    def on_train_end(self, trainer, pl_module):
        self.nonfinite_steps = int(self._count) if self._count is not None else 0
        trainer.callback_metrics[COUNT_KEY] = self.nonfinite_steps

    def metrics(self, trainer) -> dict:
        return {"nonfinite_loss_steps": int(trainer.callback_metrics.get(COUNT_KEY, self.nonfinite_steps))}
