"""Paired rounds in one process: the measurement mode=compare and mode=tune are made of.

Separate jobs each pay start-up and warm-up, and the machine's drift between them (clocks, heat,
other load) lands in the comparison. Here every arm (a setting: a batch size, a precision, a memory
format, ...) gets its own datamodule and model, built from its own full config with the same seed
(the same initial weights, the same data), is warmed up once, and then all of them train in short
alternating rounds through the path a real run takes (build(): Lightning's Trainer, bsbench's
callbacks, the device-side input), a fresh Trainer per round on the same model. A round is
`compare.warmup_steps` untimed steps and `compare.steps` timed ones per arm, in rotating order
(bsbench.core.order.round_order); each arm's steady-state samples/s per round pairs with the other
arms' of the same round. Before each of its fits an arm sets the process-wide values its config
holds (the float32 matmul precision), so nothing leaks from one arm into the next. With several DDP
ranks every rank runs the same loop and rank 0 decides when it ends."""

import logging
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable

import lightning as L
import torch
from lightning.pytorch.utilities.memory import garbage_collection_cuda
from omegaconf import DictConfig, OmegaConf, open_dict

from bsbench.core import parts, racing
from bsbench.core.fields import Status
from bsbench.core.oom import is_oom
from bsbench.job.build import Built, build
from bsbench.job.console import LOG_ONLY
from bsbench.job.fit import check_trained, fit, with_utilization
from bsbench.job.record import setup_fields
from bsbench.training.energy import energy_fields
from bsbench.training.flops import StepFlops
from bsbench.training.telemetry import FIELDS, summarize
from bsbench.training.timing import compile_time, step_time_metrics

log = logging.getLogger("bsbench")
STARTING_MATMUL_PRECISION = torch.get_float32_matmul_precision()  # the value matmul_precision=null means


@dataclass
class Arm:
    """One measured setting: its config, its parts and what its rounds measured."""

    setting: dict  # the keys that make it this arm, batch_size among them
    cfg: DictConfig  # its whole config
    built: Built | None = None
    first_step_time_s: float | None = None
    status: Status = Status.OK
    error: dict = field(default_factory=dict)
    rates: list[float] = field(default_factory=list)
    step_times_s: list[float] = field(default_factory=list)
    data_waits_s: list[float] = field(default_factory=list)
    optimizer_steps: int = 0
    batch_size_observed: int | None = None
    timed_steps: int = 0
    samples: int = 0
    timed_samples: int = 0
    timed_seconds: float = 0.0
    nonfinite_loss_steps: int = 0
    peak_memory_bytes: int | None = None
    precision_used: str | None = None
    step_flops: int | None = None  # FLOPs per sample of a real warm-up step (a module the meta device cannot run)
    energy_mj: float | None = 0.0  # over the timed steps of every round (None: not measured)
    energy_reason: str | None = None
    round_joules_per_sample: list[float] = field(default_factory=list)
    telemetry: dict[str, list[float]] = field(default_factory=lambda: {name: [] for name in FIELDS})
    gpu_others: list[int] = field(default_factory=list)  # other processes on the card, per telemetry sample

    @property
    def batch_size(self) -> int:
        return self.cfg.batch_size

    @property
    def live(self) -> bool:
        return self.status == Status.OK and self.built is not None

    def add(self, built: Built) -> None:
        """What one round's Trainer measured."""
        timing, trainer = built.timing, built.trainer
        timing.collect(trainer)
        measured = timing.metrics()
        rate = measured["train_samples_per_s"]
        if rate is None:
            raise RuntimeError(f"{self.setting}: a round timed no step")
        check_trained(self.cfg, measured)
        self.optimizer_steps += measured["optimizer_steps"] or 0
        self.batch_size_observed = measured["batch_size_observed"]
        self.rates.append(rate)
        if measured["energy_j"] is None or self.energy_mj is None:
            self.energy_mj, self.energy_reason = None, measured["energy_reason"]
        else:
            self.energy_mj += measured["energy_j"] * 1000
            self.round_joules_per_sample.append(measured["joules_per_sample"])
        self.step_times_s += built.step_timer.step_times_s
        self.data_waits_s += built.step_timer.data_waits_s
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
            self.gpu_others += built.telemetry.sampler.others

    def leave(self) -> None:
        """Out of the rounds (the racing rule decided it): its model and Trainer given back."""
        self.built = None
        garbage_collection_cuda()

    def out_of_memory(self, exc: BaseException) -> None:
        """This arm does not fit: it leaves the rounds, its memory given back; the others go on."""
        self.status, self.built = Status.OOM, None
        self.error = {"error_type": type(exc).__name__, "error": (str(exc).strip().splitlines() or [""])[0]}
        garbage_collection_cuda()


def with_setting(cfg: DictConfig, setting: dict) -> DictConfig:
    """`cfg` with an arm's keys set (a dotted key reaches into its section)."""
    arm = cfg.copy()
    with open_dict(arm):
        for key, value in setting.items():
            OmegaConf.update(arm, key, value, merge=False)
    return arm


def fit_config(cfg: DictConfig, warmup: int, steps: int) -> DictConfig:
    """An arm's config for one fit: `warmup` untimed optimizer steps, then `steps` timed ones. Lightning's
    max_steps counts optimizer steps and the timing callback batches: with gradient accumulation, the timed
    batches are whole optimizer steps' worth."""
    one = cfg.copy()
    with open_dict(one):
        one.timing.warmup_steps = warmup * (cfg.trainer.get("accumulate_grad_batches") or 1)
        one.trainer.max_steps = warmup + steps
    return one


def set_process_wide(cfg: DictConfig) -> None:
    """What an arm's config sets for the whole process, set before each of its fits."""
    torch.set_float32_matmul_precision(cfg.matmul_precision or STARTING_MATMUL_PRECISION)


def device_of(cfg: DictConfig) -> torch.device:
    """The device the arms were to run on, where none got a Trainer (every arm out of memory)."""
    gpu = cfg.accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available()
    return torch.device("cuda", torch.cuda.current_device()) if gpu else torch.device("cpu")


def precision_that_runs(cfg: DictConfig) -> str:
    """The precision Lightning runs `cfg.precision` as on the job's accelerator (16-mixed runs as bf16-mixed on
    a CPU), as a Trainer of one device takes it."""
    with warnings.catch_warnings():  # Lightning's note of the substitution: the caller says what it does of it
        warnings.simplefilter("ignore")
        trainer = L.Trainer(accelerator=cfg.accelerator, devices=1, precision=cfg.precision, logger=False,
                            enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    return str(trainer.precision)


def one_process() -> bool:
    """An arm that runs out of memory can leave the rounds only where no other rank waits for it."""
    return not (torch.distributed.is_available() and torch.distributed.is_initialized()
                and torch.distributed.get_world_size() > 1)


def _fit_or_oom(arm: Arm, built: Built) -> bool:
    try:
        set_process_wide(arm.cfg)
        fit(built)
        return True
    except Exception as exc:
        if not (is_oom(exc) and one_process()):
            raise
        arm.out_of_memory(exc)
        return False


def warm(cfg: DictConfig, setting: dict) -> Arm:
    """An arm built from its own config and warmed up once (allocation, autotuning, compilation:
    timed by nobody). One that does not fit comes back with status oom."""
    arm = Arm(setting, with_setting(cfg, setting))
    # the same seed for every arm: the same initial weights, the same data order
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    warmup = max(1, cfg.timing.warmup_steps)
    # a module of the user's: its last warm-up step counted for real, where the meta device's count fails
    counter = StepFlops(warmup - 1) if parts.own(cfg, "model") else None
    try:
        built = build(fit_config(arm.cfg, warmup, 0), [counter] if counter else [])
    except Exception as exc:
        if not (is_oom(exc) and one_process()):
            raise
        arm.out_of_memory(exc)
        return arm
    if _fit_or_oom(arm, built):
        built.timing.collect(built.trainer)
        arm.built, arm.first_step_time_s = built, built.timing.first_step_time_s
        arm.precision_used = str(built.trainer.precision)
        arm.step_flops = counter.flops_per_sample if counter else None
    return arm


def agreed(value):
    """Rank 0's value on every rank (one process: the value itself): the ranks stop together."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        box = [value]
        torch.distributed.broadcast_object_list(box, src=0)
        return box[0]
    return value


@contextmanager
def quiet_lightning():
    """Lightning's banners once per arm, not once per round."""
    lightning_log = logging.getLogger("lightning.pytorch")
    level = lightning_log.level
    lightning_log.setLevel(logging.WARNING)
    try:
        yield
    finally:
        lightning_log.setLevel(level)


def rates(arm: Arm) -> list[float]:
    """What an arm is compared on by default: samples/s per round."""
    return arm.rates


def play(arm: Arm, spec: DictConfig) -> None:
    """One round of one arm: a fresh Trainer on its model, `spec.warmup_steps` untimed steps and
    `spec.steps` timed ones; an arm that runs out of memory leaves the race."""
    built = build(fit_config(arm.cfg, spec.warmup_steps, spec.steps), reuse=arm.built)
    if _fit_or_oom(arm, built):
        arm.add(built)


def race(arms: list[Arm], spec: DictConfig, pairs: Callable[[list[Arm], racing.Race], list[tuple[int, int]]], *,
         cap: int, target_ci: float | None, budget_s: float | None, min_rounds: int,
         eliminate: Callable[[list[Arm], racing.Race], list[int]] | None = None, label: str = "round",
         value: Callable[[Arm], list[float]] = rates, budget_after: int = 1, hard_s: float | None = None,
         on_round: Callable[[int, list[Arm]], None] | None = None) -> dict:
    """The arms' rounds on this device (bsbench.core.racing.race says when they end), Lightning's
    banners once per arm, each round's rates in the log. Returns the stop record."""

    def logged(done: int, arms: list[Arm]) -> None:
        log.info("%s %d: %s", label, done, ", ".join(f"{_name(a.setting)}: {a.rates[-1]:.1f}" for a in arms
                                                    if a.live and a.rates), extra={LOG_ONLY: True})
        if on_round is not None:
            on_round(done, arms)

    with quiet_lightning():
        return racing.race(arms, lambda arm: play(arm, spec), pairs, value=value, cap=cap, target_ci=target_ci,
                           budget_s=budget_s, min_rounds=min_rounds, eliminate=eliminate, budget_after=budget_after,
                           hard_s=hard_s, agree=agreed, on_round=logged)


def _name(setting: dict) -> str:
    return " ".join(f"{k}={v}" for k, v in setting.items())


def arm_result(arm: Arm, world_size: int, spec: DictConfig) -> dict:
    """An arm's own fields: its setup, as its config says, and what its rounds measured."""
    ran = bool(arm.rates)
    return {
        **setup_fields(arm.cfg),
        **({"status": arm.status, **arm.error} if arm.status != Status.OK else {}),
        "global_batch_size": arm.batch_size * world_size,
        "precision_used": arm.precision_used,
        "float32_matmul_precision": arm.cfg.matmul_precision or STARTING_MATMUL_PRECISION,
        "round_samples_per_s": arm.rates,
        "train_samples_per_s": arm.timed_samples / arm.timed_seconds if arm.timed_seconds else None,
        "train_samples": arm.samples,
        "warmup_steps": spec.warmup_steps,
        "timed_steps": arm.timed_steps,
        "timed_samples": arm.timed_samples,
        "timed_seconds": arm.timed_seconds,
        "optimizer_steps": arm.optimizer_steps if ran else None,
        "batch_size_observed": arm.batch_size_observed,
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
        "nonfinite_loss_steps": arm.nonfinite_loss_steps if ran else None,
        **energy_fields(arm.energy_mj if ran else None, arm.timed_samples, arm.energy_reason or
                        (None if ran else "no round ran")),
        "round_joules_per_sample": arm.round_joules_per_sample if arm.energy_mj is not None else [],
        **(steps := step_time_metrics(arm.step_times_s, arm.data_waits_s)),
        "compile_time_s": compile_time(arm.cfg.compile, arm.first_step_time_s, steps["step_time_median_ms"]),
        **summarize(arm.telemetry, arm.gpu_others),
    }


def arm_flops(arm: Arm, result: dict) -> dict:
    """An arm's result with its FLOPs and MFU (bsbench.job.fit.with_utilization), counted on the meta device or
    on its real warm-up step."""
    return with_utilization(arm.cfg, result, step_flops=arm.step_flops)


@contextmanager
def recompile_room(compiled: int):
    """torch.compile keeps at most `recompile_limit` (8) graphs per code object and then silently runs
    it uncompiled; arms that compile the same module (another batch size, precision or memory format
    each needs its own graph) share that limit. It is raised to 8 graphs per compiled arm, and hitting
    it fails the run instead of timing uncompiled steps as compiled ones. Yields the limit in force."""
    config = torch._dynamo.config
    names = [name for name in ("recompile_limit", "fail_on_recompile_limit_hit") if hasattr(config, name)]
    saved = {name: getattr(config, name) for name in names}
    limit = max(saved.get("recompile_limit", 8), 8 * compiled)
    try:
        if "recompile_limit" in saved:
            config.recompile_limit = limit
        if "fail_on_recompile_limit_hit" in saved:
            config.fail_on_recompile_limit_hit = True
        yield limit if compiled else None
    finally:
        for name, value in saved.items():
            setattr(config, name, value)
