"""mode=compare: the batch sizes of `compare.batch_sizes` measured against each other in one process.

Separate jobs each pay start-up and warm-up, and the machine's drift between them (clocks, heat,
other load) lands in the comparison. Here every batch size gets its own datamodule and model (the
same seed, so the same initial weights and the same data), is warmed up once, and then all of them
train in short alternating rounds through the path a real run takes (build(): Lightning's Trainer,
bsbench's callbacks, the device-side input), a fresh Trainer per round on the same model. A round
is `compare.warmup_steps` untimed steps and `compare.steps` timed ones per batch size, in rotating
order (bsbench.core.order.round_order); each batch size's steady-state samples/s per round pairs
with its neighbours' of the same round. Rounds go on until every comparison's 95% interval is within
`target_ci`, another round would pass `budget_min`, or `compare.rounds` have run
(bsbench.core.stopping). With several DDP ranks every rank runs this loop and rank 0 decides when
it ends."""

import logging
import time
import uuid
from dataclasses import dataclass, field

import lightning as L
import torch
from omegaconf import DictConfig, open_dict

from bsbench.core import stopping
from bsbench.core.fields import Status
from bsbench.core.order import round_order
from bsbench.core.results import now, setup_fields
from bsbench.job.build import Built, build
from bsbench.job.console import LOG_ONLY
from bsbench.report.stats import half_width, paired
from bsbench.report.verdict import neighbour_pairs
from bsbench.training.environment import describe
from bsbench.training.telemetry import FIELDS, summarize
from bsbench.training.timing import step_time_metrics

log = logging.getLogger("bsbench")


@dataclass
class Arm:
    """One compared batch size: its parts and what its rounds measured."""

    batch_size: int
    built: Built
    first_step_time_s: float | None
    rates: list[float] = field(default_factory=list)
    step_times_s: list[float] = field(default_factory=list)
    timed_steps: int = 0
    samples: int = 0
    timed_samples: int = 0
    timed_seconds: float = 0.0
    nonfinite_loss_steps: int = 0
    peak_memory_bytes: int | None = None
    telemetry: dict[str, list[float]] = field(default_factory=lambda: {name: [] for name in FIELDS})

    def add(self, built: Built) -> None:
        """What one round's Trainer measured."""
        timing, trainer = built.timing, built.trainer
        timing.collect(trainer)
        rate = timing.metrics()["train_samples_per_s"]
        if rate is None:
            raise RuntimeError(f"batch size {self.batch_size}: a round timed no step")
        self.rates.append(rate)
        self.step_times_s += built.step_timer.step_times_s
        self.timed_steps += timing.timed_steps
        self.samples += timing.samples_seen
        self.timed_samples += timing.timed_samples
        self.timed_seconds += timing.timed_seconds
        self.nonfinite_loss_steps += built.loss_watch.metrics(trainer)["nonfinite_loss_steps"]
        if timing.peak_memory_bytes is not None:
            self.peak_memory_bytes = max(self.peak_memory_bytes or 0, timing.peak_memory_bytes)
        if built.telemetry.sampler is not None:
            for name, values in built.telemetry.sampler.samples.items():
                self.telemetry[name] += values


def arm_config(cfg: DictConfig, batch_size: int, warmup: int, steps: int) -> DictConfig:
    """The config of one batch size's fit: `warmup` untimed steps, then `steps` timed ones."""
    arm = cfg.copy()
    with open_dict(arm):
        arm.batch_size = batch_size
        arm.timing.warmup_steps = warmup
        arm.trainer.max_steps = warmup + steps
    return arm


def comparisons(arms: list[Arm]) -> list[dict]:
    """Every comparison of the verdict, paired over the rounds so far."""
    by_size = {arm.batch_size: arm for arm in arms}
    return [paired(by_size[b].rates, by_size[n].rates) for b, n in neighbour_pairs(by_size)]


def agreed(value):
    """Rank 0's value on every rank (one process: the value itself): the ranks stop together."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        box = [value]
        torch.distributed.broadcast_object_list(box, src=0)
        return box[0]
    return value


def run_compare(cfg: DictConfig, started_at: str, fit) -> dict | None:
    """Measure the compared batch sizes in rounds; `fit(built)` trains one Trainer (bsbench.job.run).
    Returns the job's result, with one result per batch size under `arms`, on global rank 0."""
    started = time.monotonic()
    spec = cfg.compare
    arms = []
    for batch_size in spec.batch_sizes:
        # the same seed for every batch size: the same initial weights, the same data order
        L.seed_everything(cfg.seed, workers=True, verbose=False)
        built = build(arm_config(cfg, batch_size, max(1, cfg.timing.warmup_steps), 0))
        fit(built)  # one-time costs (allocation, autotuning, compilation): timed by nobody
        built.timing.collect(built.trainer)
        arms.append(Arm(batch_size, built, built.timing.first_step_time_s))
    lightning_log = logging.getLogger("lightning.pytorch")
    level = lightning_log.level
    lightning_log.setLevel(logging.WARNING)  # its banners once per batch size, not once per round
    done, reason, found, round_s = 0, None, [], 0.0
    try:
        while reason is None:
            round_start = time.monotonic()
            for arm in round_order(arms, done):
                built = build(arm_config(cfg, arm.batch_size, spec.warmup_steps, spec.steps), reuse=arm.built)
                fit(built)
                arm.add(built)
            done += 1
            round_s = time.monotonic() - round_start
            found = comparisons(arms)
            reason = agreed(stopping.decide(
                [half_width(c) for c in found], done, spec.rounds, target_ci=cfg.target_ci,
                budget_min=cfg.budget_min, elapsed_s=time.monotonic() - started, round_s=round_s,
                min_rounds=2 * len(arms)))
            log.info("round %d: %s", done, ", ".join(f"{a.batch_size}: {a.rates[-1]:.1f}" for a in arms),
                     extra={LOG_ONLY: True})
    finally:
        lightning_log.setLevel(level)
    trainer = arms[0].built.trainer
    if not trainer.is_global_zero:
        return None
    stop = stopping.record(reason, done, spec.rounds, cfg.target_ci, cfg.budget_min, time.monotonic() - started,
                           [half_width(c) for c in found])
    compare_id = uuid.uuid4().hex[:12]
    return {
        "status": Status.OK,
        **setup_fields(cfg),
        "compare_id": compare_id,
        "compare_batch_sizes": list(spec.batch_sizes),
        "compare_stop": stop,
        "precision_used": str(trainer.precision),
        "world_size": trainer.world_size,
        "num_nodes": trainer.num_nodes,
        "started_at": started_at,
        "finished_at": now(),
        **describe(trainer.strategy.root_device),
        "arms": [_arm_result(arm, trainer.world_size, spec) for arm in arms],
    }


def _arm_result(arm: Arm, world_size: int, spec: DictConfig) -> dict:
    return {
        "batch_size": arm.batch_size,
        "global_batch_size": arm.batch_size * world_size,
        "round_samples_per_s": arm.rates,
        "train_samples_per_s": arm.timed_samples / arm.timed_seconds if arm.timed_seconds else None,
        "train_samples": arm.samples,
        "warmup_steps": spec.warmup_steps,
        "timed_steps": arm.timed_steps,
        "first_step_time_s": arm.first_step_time_s,
        "train_time_s": None,
        "epoch_times_s": [],
        "inference_time_s": None,
        "inference_samples_per_s": None,
        "test_samples": None,
        "inference_world_size": None,
        "val_acc": None,
        "test_acc": None,
        "peak_memory_mib": arm.peak_memory_bytes / 2**20 if arm.peak_memory_bytes is not None else None,
        "nonfinite_loss_steps": arm.nonfinite_loss_steps,
        **step_time_metrics(arm.step_times_s),
        **summarize(arm.telemetry),
    }
