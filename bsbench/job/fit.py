"""A training run of one job: build, fit, check that the timed steps trained what the result will be
labelled with, and the result with its FLOPs and utilization. The modes' runs (bsbench.job.runs) and
the paired rounds (bsbench.job.rounds) are made of these."""

import logging

import lightning as L
from omegaconf import DictConfig

from bsbench.core import interrupt, parts
from bsbench.core.errors import first_line
from bsbench.core.fields import Status
from bsbench.core.results import now
from bsbench.core.utilization import utilization
from bsbench.job.build import Built, build
from bsbench.job.record import setup_fields
from bsbench.training.environment import describe
from bsbench.training.flops import count as count_flops
from bsbench.training.flops import StepFlops, count_step, uncounted
from bsbench.training.parts import input_batch, meta_module, parts_text, shapes
from bsbench.training.timing import compile_time

log = logging.getLogger("bsbench")


def train(cfg: DictConfig, started_at: str, callbacks=(), after_fit=None) -> dict | None:
    """A training run: build, fit, and its result; `after_fit(built)` adds a mode's own figures
    (mode=train's test, mode=profile's traces). A module of the user's whose step the meta device may not
    run (bsbench.training.flops) has its last warm-up step counted for real."""
    counter = StepFlops(cfg.timing.warmup_steps - 1) if parts.own(cfg, "model") and cfg.timing.warmup_steps else None
    built = build(cfg, [*callbacks, *([counter] if counter else [])])
    trainer = built.trainer
    fit(built)
    built.timing.collect(trainer)
    measured = {**built.timing.metrics(), **built.step_timer.metrics(trainer), **built.loss_watch.metrics(trainer),
                "val_acc": _metric(trainer, "val_acc"), "test_acc": None, "inference_world_size": None}
    check_trained(cfg, measured)
    measured.pop("weights_moved")  # the check's, not a figure of the result
    if after_fit is not None:
        measured.update(after_fit(built))
    return result(cfg, built, measured, started_at, counter.flops_per_sample if counter else None)


def result(cfg: DictConfig, built: Built, measured: dict, started_at: str, step_flops: int | None = None) -> dict | None:
    """A finished run's result, on global rank 0 (None on the other ranks); `step_flops`: FLOPs per sample
    counted on a real training step, where the meta device's count fails."""
    trainer = built.trainer
    if not trainer.is_global_zero:
        return None
    measured = {**measured, "compile_time_s": compile_time(cfg.compile, measured.get("first_step_time_s"),
                                                           measured.get("step_time_median_ms"))}
    return with_utilization(cfg, {
        "status": Status.OK,
        **setup_fields(cfg),
        **ran(cfg, trainer),
        **measured,
        **built.telemetry.metrics(),
        "started_at": started_at,
        "finished_at": now(),
        **describe(trainer.strategy.root_device),
    }, built.timing.first_batch, step_flops)


class NotATrainingRate(RuntimeError):
    """A run whose timed steps were not the training it was asked for: no optimizer step, or batches of
    another size than the one it is labelled with. Its rate would be a number it cannot stand behind."""


def check_trained(cfg: DictConfig, measured: dict) -> None:
    """The timed steps trained, on the batch size the result will be labelled with: else NotATrainingRate,
    in one line saying what ran and why it is not a rate of this configuration."""
    steps, stepped = measured.get("timed_steps") or 0, measured.get("optimizer_steps")
    if steps == 0:  # the run's steps are the user's datamodule's, so they could not be counted before it ran
        raise NotATrainingRate(f"timing.warmup_steps={cfg.timing.warmup_steps} left out every training step of this "
                               "run, so none was timed and it has no samples/s; use fewer warm-up steps than the "
                               "run makes, or train longer")
    accumulate = cfg.trainer.get("accumulate_grad_batches") or 1
    if stepped == 0 and steps >= accumulate and not measured.get("weights_moved"):
        raise NotATrainingRate(f"the {steps} timed steps made no optimizer step with a gradient: a training_step "
                               "that returns None (Lightning then skips the backward pass and the step), or manual "
                               "optimization that never calls optimizer.step(); return the loss, or step your "
                               "optimizers, and the run is timed as usual")
    check_batch(cfg.batch_size, measured.get("batch_size_observed"))


def check_batch(batch_size: int, made: int | None, what: str = "this run would be labelled with") -> None:
    """The training loader made the batches bsbench set: else NotATrainingRate, in one line."""
    if made is not None and made != batch_size:
        raise NotATrainingRate(f"the training loader made batches of {made} per device, not batch_size="
                               f"{batch_size}, the batch size {what}: build your training DataLoader with the "
                               "batch size bsbench sets (self.batch_size or hparams.batch_size, where Lightning's "
                               "BatchSizeFinder sets it too), and give it at least that many training samples")


def with_utilization(cfg: DictConfig, result: dict, batch=None, step_flops: int | None = None) -> dict:
    """The result with its FLOPs per sample, achieved TFLOP/s and MFU (bsbench.core.utilization); a run
    that did not finish gets its count and nulls, with the reason. `batch`: a training batch's shapes
    (on the meta device), for a datamodule of the user's; `step_flops`: the count of a real training step,
    used where the meta device's fails. `flops_counted` says which way the count was made."""
    counts = job_flops(cfg, batch)
    if counts["flops_error"] is not None and step_flops:
        counts = {"train_flops_per_sample": step_flops, "inference_flops_per_sample": None, "flops_error": None,
                  "flops_counted": "on a real warm-up training step (the meta device could not run it: "
                                   f"{counts['flops_error']})"}
    else:
        counts = {**counts, "flops_counted": "on the meta device" if counts["flops_error"] is None else None}
    result.update(counts)
    return {**result, **utilization(result, cfg.mfu.peak_tflops)}


_COUNTED: dict = {}  # a user's module's count, by what it was built from and the batch's shapes


def job_flops(cfg: DictConfig, batch=None) -> dict:
    """The job's FLOPs per sample, counted once per configuration in a process (a cache): bsbench's
    classifier by its architecture; a user's module by its own training_step on the meta device, on
    the batch bsbench makes, or on the shapes of the first batch a datamodule of the user's handed over."""
    if not (parts.own(cfg, "model") or parts.own(cfg, "data")):
        model = cfg.model
        return count_flops(model.arch, model.num_classes, cfg.data.image_size, model.train_acc_eval_forward)
    if not parts.own(cfg, "data"):
        batch = input_batch(cfg)
    if batch is None:
        return uncounted("a datamodule of your own: counted from its first training batch, which this run did not "
                         "hand over (a comparison's, a search's or a failed run's)")
    key = (parts_text(cfg), shapes(batch))
    if key not in _COUNTED:
        try:
            _COUNTED[key] = count_step(meta_module(cfg), batch)
        except Exception as exc:  # a custom op, data-dependent shapes, a step that needs its Trainer
            _COUNTED[key] = uncounted(first_line(exc))
    return _COUNTED[key]


def fit(built: Built) -> None:
    lightning_call(built.trainer, built.trainer.fit, built.model, datamodule=built.datamodule)


def lightning_call(trainer: L.Trainer, call, *args, **kwargs):
    """A Trainer entry point, with an interruption given back as one: Lightning answers Ctrl-C and
    SIGTERM with sys.exit(1) after ignoring further SIGINTs."""
    try:
        return call(*args, **kwargs)
    except SystemExit:
        if trainer.interrupted:
            interrupt.install()
            raise KeyboardInterrupt from None
        raise


def _metric(trainer, name: str) -> float | None:
    value = trainer.callback_metrics.get(name)
    return float(value) if value is not None else None


def ran(cfg: DictConfig, trainer: L.Trainer) -> dict:
    """What the Trainer ran: the global batch, the precision as Lightning took it, the processes."""
    return {"global_batch_size": cfg.batch_size * trainer.world_size, "precision_used": str(trainer.precision),
            "world_size": trainer.world_size, "num_nodes": trainer.num_nodes}
