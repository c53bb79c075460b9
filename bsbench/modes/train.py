"""mode=train (conf/mode/train.yaml): the reference's run. `epochs` epochs, each with its validation,
timed, then inference on the test set, timed."""

from bsbench.core.errors import UserError
from bsbench.modes.base import Mode


class Train(Mode):
    name = "train"

    def check_steps(self, cfg):
        from bsbench.job.validate import training_steps

        steps, warmup = training_steps(cfg), cfg.timing.warmup_steps
        if steps is not None and warmup >= steps:
            raise UserError(f"timing.warmup_steps={warmup} leaves no timed step of the {steps} training steps this run "
                            f"makes, so it would have no samples/s; use at most timing.warmup_steps={steps - 1}, or "
                            "more epochs.")

    def run(self, cfg, started_at):
        from bsbench.job.run import train

        return train(cfg, started_at, after_fit=_test)


def _test(built) -> dict:
    """Inference on the test set, as the reference times it."""
    from bsbench.job.run import lightning_call

    trainer = built.trainer
    tested = lightning_call(trainer, trainer.test, built.model, datamodule=built.datamodule, verbose=False)
    built.timing.collect(trainer)
    timing = built.timing.metrics()
    return {
        "inference_time_s": timing["inference_time_s"],
        "inference_samples_per_s": timing["inference_samples_per_s"],
        "test_samples": timing["test_samples"],
        # Lightning tests with every rank, each on its shard of the test set (the reference used one device)
        "inference_world_size": trainer.world_size,
        "test_acc": tested[0].get("test_acc") if tested else None,
    }


MODE = Train()
