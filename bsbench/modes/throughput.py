"""mode=throughput (conf/mode/throughput.yaml): the training step and nothing else, so a sweep point
costs seconds: trainer.max_steps steps, the first timing.warmup_steps left out of the figures."""

from bsbench.core.errors import UserError
from bsbench.modes.base import Mode


class Throughput(Mode):
    name = "throughput"

    def check(self, cfg, here):
        max_steps, warmup = cfg.trainer.max_steps, cfg.timing.warmup_steps
        if not max_steps > warmup:
            raise UserError(f"trainer.max_steps={max_steps} leaves no timed step after timing.warmup_steps={warmup} "
                            f"(mode=throughput times the steps after the warm-up); use e.g. trainer.max_steps={warmup + 50}.")


MODE = Throughput()
