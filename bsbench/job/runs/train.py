"""mode=train's run (bsbench.modes.train): `epochs` epochs, each with its validation, timed, then
inference on the test set, timed, as the reference times it."""

from omegaconf import DictConfig

from bsbench.job.fit import lightning_call, train


def run(cfg: DictConfig, started_at: str) -> dict | None:
    return train(cfg, started_at, after_fit=_test)


def _test(built) -> dict:
    """Inference on the test set, as the reference times it."""
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
