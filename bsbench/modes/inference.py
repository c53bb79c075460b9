"""mode=inference (conf/mode/inference.yaml): the batch sizes a deployment would serve. Eval-mode
forward passes without gradients on the test images cycled into full batches, each timed on its own
(bsbench.training.timing); samples/s over the timed passes and the latency per batch."""

from bsbench.modes.base import Mode


class Inference(Mode):
    name = "inference"
    measures = "inference"
    one_device = "times forward passes"
    sections = ("inference",)
    FIGURES = (("inference_samples_per_s", None, " samples/s"), ("latency_median_ms", None, " ms per batch"),
               ("latency_p95_ms", None, " ms p95"))
    MFU = "inference_mfu"

    def full_batches(self, cfg):
        return []  # the test set is cycled into its batches: any batch size has them


MODE = Inference()
