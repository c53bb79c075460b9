"""The range of every setting whose type allows values that cannot be meant (`repeats=0`, `cooldown_s=-1`,
`trainer.accumulate_grad_batches=0`), declared once: bsbench.core.config.typed refuses a value outside
its range in one line naming the key and a value that works, before any job, whatever the mode (a key
a mode does not read is still a typo to be told about), and docs/configuration.md shows each range
beside the key's type. What a range cannot say (a choice Lightning or torch lists, a batch size that
needs the data set's size, a path that must be writable) is bsbench.job.validate's and the modes'.
Stdlib only."""

import math
import re
from dataclasses import dataclass
from typing import Any, Callable

from bsbench.core.errors import UserError
from bsbench.core.order import ORDERS
from bsbench.core.tuning import OBJECTIVES

MAX_SEED = 2**32 - 1  # the seeds numpy takes


@dataclass(frozen=True)
class Range:
    """A setting's allowed values: `ok(value)`, in words for a sentence (`wanted`: "a positive integer")
    and for the reference (`short`: "≥ 1"), with an example that works. null passes wherever the schema
    allows it (its type says so)."""

    ok: Callable[[Any], bool]
    wanted: str
    short: str
    example: Any

    def check(self, key: str, value) -> None:
        if value is None or self.ok(value):
            return
        shown = f"{value:g}" if isinstance(value, float) else value  # -1, as typed, not the schema's -1.0
        raise UserError(f"{key}={shown} is not {self.wanted}; use e.g. {key}={self.example}.")


def number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def at_least(low, example, strictly: bool = False, also: tuple = ()) -> Range:
    """low or more (more than low where `strictly`), or one of `also` (-1: no limit)."""
    wanted = f"greater than {low}" if strictly else ("a positive integer" if low == 1 else f"at least {low}")
    short = f"> {low}" if strictly else f"≥ {low}"
    if also:
        wanted = " or ".join(str(a) for a in also) + f" or {wanted}"
        short = ", ".join(str(a) for a in also) + f" or {short}"
    return Range(lambda v: number(v) and (v in also or v > low or (not strictly and v == low)), wanted, short, example)


def between(low, high, example, wanted: str | None = None, open_: bool = False) -> Range:
    """From low to high (exclusive of both where `open_`)."""
    inside = (lambda v: low < v < high) if open_ else (lambda v: low <= v <= high)
    short = f"{low} < x < {high}" if open_ else f"{low} to {high}"
    return Range(lambda v: number(v) and inside(v), wanted or f"between {low} and {high}", short, example)


def one_of(*choices, example=None) -> Range:
    names = [str(c) for c in choices]
    return Range(lambda v: str(v) in names, "one of: " + ", ".join(names), " or ".join(names) if len(names) < 3
                 else "one of " + ", ".join(names), example if example is not None else names[0])


class Each(Range):
    """A list each of whose elements is in a range: a refusal names the element."""

    def __init__(self, inner: Range, example: str):
        super().__init__(lambda v: all(inner.ok(x) for x in v), inner.wanted, f"each {inner.short}", example)
        object.__setattr__(self, "inner", inner)

    def check(self, key: str, value) -> None:
        if value is None or self.ok(value):
            return
        bad = next(x for x in value if not self.inner.ok(x))
        raise UserError(f"{key} holds {bad}, which is not {self.wanted}; use e.g. {key}={self.example}.")


def batches(example) -> Range:
    """Lightning's limit_*_batches and overfit_batches: a fraction from 0.0 to 1.0, or a count of batches."""
    return Range(lambda v: number(v) and v >= 0 and (v <= 1 or v == int(v)),
                 "a fraction from 0.0 to 1.0 or a whole number of batches", "0.0 to 1.0, or a count ≥ 0", example)


def _duration(v) -> bool:
    """Lightning's max_time: DD:HH:MM:SS, or a mapping of timedelta's keys."""
    if isinstance(v, str):
        return re.fullmatch(r"\d+:\d\d:\d\d:\d\d", v.strip()) is not None
    keys = {"weeks", "days", "hours", "minutes", "seconds", "milliseconds", "microseconds"}
    return isinstance(v, dict) and set(v) <= keys and all(number(x) and x >= 0 for x in v.values())


RANGES: dict[str, Range] = {
    "batch_size": at_least(1, 256),
    "epochs": at_least(1, 10),
    "seed": between(0, MAX_SEED, 123),
    "repeats": at_least(1, 3),
    "order": one_of(*ORDERS),
    "order_seed": between(0, MAX_SEED, 0),
    "cooldown_s": at_least(0, 30),
    "repeat": at_least(0, 0),
    "target_ci": between(0, 1, 0.01, "a relative half-width between 0 and 1 (0.01: ±1%)", open_=True),
    "budget_min": at_least(0, 10, strictly=True),
    "compare.batch_sizes": Each(at_least(1, 512), "[511,512,513]"),
    "compare.rounds": at_least(2, 60),
    "compare.warmup_steps": at_least(0, 3),
    "compare.steps": at_least(1, 10),
    "timing.warmup_steps": at_least(0, 20),
    "telemetry.interval_s": at_least(0, 1.0, strictly=True),
    "find_max.max_val": at_least(1, 8192),
    "find_max.max_trials": at_least(1, 25),
    "tune.max_batch_size": at_least(1, 512),
    "tune.effective_batch": at_least(2, 256),
    "ddp.bucket_cap_mb": at_least(1, 25),
    "tune.objective": one_of(*OBJECTIVES),
    "tune.grid_points": at_least(1, 5),
    "inference.batches": at_least(1, 50),
    "profile.warmup": at_least(0, 2),
    "profile.active": at_least(1, 5),
    "profile.repeat": at_least(1, 3),
    "profile.top": at_least(1, 15),
    "mfu.peak_tflops": at_least(0, 989.5, strictly=True),
    "data.val_size": at_least(1, 5000),
    "data.split_seed": between(0, MAX_SEED, 42),
    "data.image_size": at_least(1, 224),
    "data.resize_size": at_least(1, 256),
    "data.num_workers": at_least(0, 3),
    "data.num_train_images": at_least(1, 50000),
    "data.num_test_images": at_least(1, 10000),
    "data.shape": Each(at_least(1, 64), "[3,64,64]"),
    "model.num_classes": at_least(1, 10),
    "model.lr": at_least(0, 5e-4, strictly=True),
    "trainer.num_nodes": at_least(1, 1),
    "trainer.fast_dev_run": Range(lambda v: isinstance(v, bool) or (number(v) and v == int(v) and v >= 0),
                                  "true, false or a number of batches", "true, false or a count ≥ 0", "false"),
    "trainer.max_epochs": at_least(1, 10, also=(-1,)),
    "trainer.min_epochs": at_least(0, 1),
    "trainer.max_steps": at_least(1, 100, also=(-1,)),
    "trainer.min_steps": at_least(0, 10),
    "trainer.max_time": Range(_duration, "a duration DD:HH:MM:SS or a mapping such as {hours: 1}",
                              "DD:HH:MM:SS or {hours: 1, ...}", "00:01:00:00"),
    "trainer.limit_train_batches": batches(1.0),
    "trainer.limit_val_batches": batches(1.0),
    "trainer.limit_test_batches": batches(1.0),
    "trainer.limit_predict_batches": batches(1.0),
    "trainer.overfit_batches": batches(0.0),
    "trainer.val_check_interval": Range(lambda v: number(v) and ((isinstance(v, float) and 0 < v <= 1)
                                                                 or (float(v) == int(v) and v >= 1)),
                                        "a fraction of an epoch above 0.0 up to 1.0 or a count of batches from 1",
                                        "0.0 < x ≤ 1.0, or a count ≥ 1", 1.0),
    "trainer.check_val_every_n_epoch": at_least(1, 1),
    "trainer.num_sanity_val_steps": at_least(0, 2, also=(-1,)),
    "trainer.log_every_n_steps": at_least(0, 50),
    "trainer.accumulate_grad_batches": at_least(1, 1),
    "trainer.gradient_clip_val": at_least(0, 1.0),
    "trainer.gradient_clip_algorithm": one_of("norm", "value"),
    "trainer.deterministic": Range(lambda v: isinstance(v, bool) or v == "warn", "true, false or warn",
                                   "true, false or warn", "false"),
    "trainer.profiler": one_of("simple", "advanced", "pytorch", "xla"),  # Lightning's names (trainer/setup.py)
    "trainer.reload_dataloaders_every_n_epochs": at_least(0, 0),
}


def check_ranges(get: Callable[[str], Any], skip: tuple[str, ...] = ()) -> None:
    """A UserError naming the first setting outside its range. `get(key)`: the setting's value (None
    where it is null or cannot be read yet); keys under a section in `skip` (a module of the user's
    takes its own keys) are left out."""
    for key, allowed in RANGES.items():
        if key.split(".")[0] not in skip:
            allowed.check(key, get(key))
