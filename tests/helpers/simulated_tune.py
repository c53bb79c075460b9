"""Simulated tunes: bsbench.core.tuning's whole procedure (its stages, races, racing rule, budget and decision
rule) over arms whose true rates are known, on a simulated clock, with noise like a machine's. What
tests/test_tune_decision.py checks, and what BENCHMARKS.md reports with more tunes:

    python tests/helpers/simulated_tune.py 5000      # each scenario's rates over 5000 tunes

The noise, per arm and round, on the log of the rate (from the development VM, BENCHMARKS.md): quiet,
Gaussian with a standard deviation of 4%; busy, Student's t with 3 degrees of freedom at 8% and, in one
round in twenty, an arm slowed to 60% (another process took the cores while it ran); on top of both, the
machine's state drifting from round to round, which every arm of a round shares."""

import math
import random
import sys
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bsbench.core import tuning  # noqa: E402 - after the path, for `python tests/helpers/simulated_tune.py`
from bsbench.core.arms import describe  # noqa: E402

START = {"batch_size": 32, "precision": "32-true", "channels_last": False, "compile": False, "model.fused_adam": False}
KNOBS = [{"channels_last": True}, {"precision": "bf16-mixed"}, {"model.fused_adam": True}]


def quiet(rng: random.Random) -> float:
    return rng.gauss(0, 0.04)


def busy(rng: random.Random) -> float:
    t3 = rng.gauss(0, 1) / math.sqrt(rng.gammavariate(1.5, 1 / 1.5))  # Student's t, 3 degrees of freedom
    return 0.08 * t3 + (math.log(0.6) if rng.random() < 0.05 else 0.0)


quiet.mean = 0.0  # the noise's mean log: a stall makes a round slower, never faster
busy.mean = 0.05 * math.log(0.6)


def flat(setting: dict) -> float:
    """A/A: every setting as fast as every other."""
    return 1000.0


def channels_last_10(setting: dict) -> float:
    """One knob 10% faster, nothing else matters."""
    return 1000.0 * (1.1 if setting.get("channels_last") else 1.0)


@dataclass
class SimArm:
    setting: dict
    values: list = field(default_factory=list)
    live: bool = True

    def leave(self) -> None:
        self.live = False


class SimLab:
    """bsbench.core.tuning.Lab on a simulated clock: warming an arm costs a second and six steps, a round
    0.3 s and four steps, at the arm's true rate."""

    def __init__(self, rate, noise, rng: random.Random, edge: int = 256, drift: float = 0.02, scale=lambda s: 1.0):
        self.rate, self.noise, self.rng, self.edge_size, self.drift = rate, noise, rng, edge, drift
        self.scale = scale  # an arm's noise, as a multiple of the others' (noise that differs between arms)
        self.t, self.state, self.warm_arms, self.lines = 0.0, 0.0, set(), []
        self.stops: dict[str, dict] = {}  # each race's stop record, by stage
        self.raced: dict[str, list[dict]] = {}  # each race's measured settings, by stage

    def _spend(self, seconds: float) -> None:
        self.t += seconds
        self.state += self.rng.gauss(0, self.drift) * math.sqrt(seconds)

    def clock(self) -> float:
        return self.t

    def say(self, line: str) -> None:
        self.lines.append(line)

    def spent(self) -> float:
        return 0.0

    def edge(self, seconds: float, costs) -> int:
        self._spend(min(seconds, 20.0))
        return self.edge_size

    def knobs(self) -> list[dict]:
        return KNOBS

    def ceiling(self):
        return None  # the simulated steps wait for no data

    def done(self, stage: str):
        return None

    def forget(self, stage: str) -> None:
        pass

    def begin(self, stage: str) -> None:
        pass

    def warmed(self, setting: dict) -> bool:
        return describe(setting) in self.warm_arms

    def warm(self, setting: dict) -> SimArm:
        if not self.warmed(setting):
            self._spend(1.0 + 6 * tuning.samples(setting) / self.rate(setting))
            self.warm_arms.add(describe(setting))
        return SimArm(setting)

    def play(self, arm: SimArm) -> None:
        rate = self.rate(arm.setting)
        self._spend(0.3 + 4 * tuning.samples(arm.setting) / rate)
        scale = self.scale(arm.setting)  # about the noise's mean: a noisier arm, not a slower one
        arm.values.append(rate * math.exp(self.state + self.noise.mean + scale * (self.noise(self.rng) - self.noise.mean)))

    def value(self, arm: SimArm) -> list[float]:
        return arm.values

    def keep_only(self, settings: list[dict]) -> None:
        self.warm_arms &= {describe(s) for s in settings}

    def save(self, stage, arms, settings, stop, elapsed_s):
        self.stops[stage] = stop
        self.raced[stage] = [a.setting for a in arms]
        return [{"status": "ok", "tune_stage": stage, "compare_setting": a.setting, "batch_size": a.setting["batch_size"],
                 "round_samples_per_s": list(a.values)} for a in arms]


def unequal(setting: dict) -> float:
    """Noise that differs between arms: your settings' three times the rest's, small batches noisier (the
    pooled intervals assume one noise for all arms of a race; this is how far that assumption may fail)."""
    return 3.0 if tuning.same(setting, START) else (START["batch_size"] / setting["batch_size"]) ** 0.5


def simulate(rate, noise, tunes: int, budget_min: float = 10, seed: int = 0, scale=lambda s: 1.0, start=START,
             effective_batch=None):
    """`tunes` tunes from `start`: each one's decision fields and the simulated seconds it took."""
    out = []
    for i in range(tunes):
        lab = SimLab(rate, noise, random.Random(f"{seed}-{i}"), scale=scale)
        out.append((tuning.run(lab, tuning.Spec(start=start, budget_min=budget_min, effective_batch=effective_batch)),
                    lab.t))
    return out


def micro_batch_64(setting: dict) -> float:
    """A fixed effective batch: the micro-batch of 64 fastest (each halving or doubling away from it 8% slower,
    smaller ones also paying for their accumulation's extra steps), channels_last 10% faster."""
    away = abs(math.log2(setting["batch_size"] / 64))
    return 1000.0 * 0.92 ** away * (1.1 if setting.get("channels_last") else 1.0)


def changed(found) -> float:
    """The share of tunes that advised a change."""
    return sum(r["tune_decision"] == tuning.CHANGE for r, _ in found) / len(found)


def found_channels_last(found) -> float:
    """The share of tunes that advised channels_last (alone or with a batch size)."""
    return sum(r["tune_decision"] == tuning.CHANGE and r["tune_best"].get("channels_last") is True
               for r, _ in found) / len(found)


SCENARIOS = {"A/A, quiet": (flat, quiet), "A/A, busy": (flat, busy),
             "A/A, busy, noise unequal between arms": (flat, busy, unequal),
             "channels_last +10%, quiet": (channels_last_10, quiet), "channels_last +10%, busy": (channels_last_10, busy)}

if __name__ == "__main__":
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    for name, (rate, noise, *scale) in SCENARIOS.items():
        found = simulate(rate, noise, n, seed=1, scale=scale[0] if scale else lambda s: 1.0)
        longest = max(t for _, t in found) / 600
        print(f"{name}: {n} tunes; change advised in {changed(found):.1%}, channels_last in "
              f"{found_channels_last(found):.1%}; the longest took {longest:.2f} of its budget")
