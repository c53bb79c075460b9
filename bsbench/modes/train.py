"""mode=train (conf/mode/train.yaml): the reference's run. `epochs` epochs, each with its validation,
timed, then inference on the test set, timed (its run: bsbench.job.runs.train)."""

from bsbench.core.errors import UserError
from bsbench.modes.base import Mode


class Train(Mode):
    name = "train"

    def check_steps(self, cfg, steps):
        warmup = cfg.timing.warmup_steps
        if steps is not None and warmup >= steps:
            raise UserError(f"timing.warmup_steps={warmup} leaves no timed step of the {steps} training steps this run "
                            f"makes, so it would have no samples/s; use at most timing.warmup_steps={steps - 1}, or "
                            "more epochs.")


MODE = Train()
