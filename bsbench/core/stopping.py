"""Adaptive stopping: a measurement made of rounds (mode=compare's rounds, a sweep's repeats) ends when
every comparison's 95% interval is as narrow as asked (`target_ci`), before a round that would overrun
its time (`budget_min`), or at its cap (`compare.rounds`, `repeats`), whichever comes first. The
decision and the sentence that reports it; stdlib only (the sweeper and the report use it)."""

import json
import math
from pathlib import Path

TARGET, BUDGET, CAP, ONE_LEFT = "target_ci", "budget_min", "cap", "one_left"
STOP_FILE = "stop.json"  # a sweep's stop, beside its results (a compare run's is in its results)


def decide(half_widths: list[float | None], done: int, cap: int, *, target_ci: float | None,
           budget_min: float | None, elapsed_s: float, round_s: float, min_rounds: int) -> str | None:
    """Why to stop after `done` rounds, or None to run another. `half_widths`: every comparison's
    relative 95% half-width (None: no interval yet); `round_s`: what a round takes. The target is only
    trusted after `min_rounds`, where a few lucky rounds cannot fake a narrow interval."""
    if (target_ci is not None and done >= min_rounds and half_widths
            and all(h is not None and h <= target_ci for h in half_widths)):
        return TARGET
    if done >= cap:
        return CAP
    if budget_min is not None and elapsed_s + round_s > budget_min * 60:
        return BUDGET
    return None


def widest(half_widths: list[float | None]) -> float | None:
    """The widest half-width, or None where some comparison has no interval yet (or there is none)."""
    if not half_widths or any(h is None for h in half_widths):
        return None
    return max(half_widths)


def record(reason: str, done: int, cap: int, target_ci: float | None, budget_min: float | None,
           elapsed_s: float, half_widths: list[float | None], budget_of: str | None = None) -> dict:
    """`budget_of`: what the budget was, where it was not the setting budget_min (a tune stage's share of it)."""
    return {"stop": reason, "rounds": done, "cap": cap, "target_ci": target_ci, "budget_min": budget_min,
            "elapsed_s": elapsed_s, "widest_half_width": widest(half_widths),
            **({"budget_of": budget_of} if budget_of else {})}


def sentence(stop: dict, unit: str = "rounds") -> str:
    """What ended a measurement, for the verdict and the terminal."""
    done, cap, target, hw = stop["rounds"], stop["cap"], stop.get("target_ci"), stop.get("widest_half_width")
    widest_text = f"±{hw:.1%}" if hw is not None and math.isfinite(hw) else "not yet known (too few runs)"
    ran = f"{done} of at most {cap} {unit} in {stop['elapsed_s'] / 60:.1f} min"
    if stop["stop"] == TARGET:
        return (f"Stopped on target after {ran}: every comparison's 95% interval is within {widest_text} "
                f"(target_ci={target}).")
    missed = f"; target_ci={target} was not reached" if target is not None else ""
    if stop["stop"] == BUDGET:
        budget = (f"{stop['budget_of']} ({stop['budget_min']:.2g} min)" if stop.get("budget_of")
                  else f"budget_min={stop['budget_min']:.3g} min")
        return (f"Stopped by the budget after {ran}: another round would have passed {budget}; the widest 95% "
                f"interval is {widest_text}{missed}.")
    if stop["stop"] == ONE_LEFT:
        return f"Stopped after {ran}: every other arm had left, its comparison decided (the racing rule)."
    return f"Ran all {ran}; the widest 95% interval is {widest_text}{missed}."


def usable(stop) -> bool:
    """A stop record the verdict can tell (one read from disk may be anything)."""
    def number(key, kind=(int, float)):
        return isinstance(stop.get(key), kind) and not isinstance(stop.get(key), bool)

    return (isinstance(stop, dict) and stop.get("stop") in (TARGET, BUDGET, CAP, ONE_LEFT) and number("rounds", int)
            and number("cap", int) and number("elapsed_s")
            and all(stop.get(k) is None or number(k) for k in ("target_ci", "budget_min", "widest_half_width"))
            and (stop.get("budget_of") is None or isinstance(stop["budget_of"], str)))


def read_stop(directory: Path) -> dict | None:
    """A sweep's stop record, if adaptive stopping ran it; an unreadable one is none."""
    try:
        stop = json.loads((Path(directory) / STOP_FILE).read_text())
    except (OSError, ValueError):
        return None
    return stop if usable(stop) else None
