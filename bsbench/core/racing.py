"""A race: arms measured in rounds until every comparison is as precise as asked, the time is spent or
the cap is reached, arms leaving once they are clearly slower. The loop and its decisions only, without
torch: bsbench.job.rounds plays each arm's round on the device, the tests play it from known rates on
a simulated clock (tests/test_tune_decision.py), and both go through this code.

An arm is any object with `live` (it still takes part) that `play(arm)` measures once per round;
`value(arm)` gives its measurements so far, one per round it played, larger is better."""

import time
from typing import Callable

from bsbench.core import stopping
from bsbench.core.order import round_order
from bsbench.core.stats import Race, half_width


def race(arms: list, play: Callable[[object], None], pairs: Callable[[list, Race], list[tuple[int, int]]], *,
         value: Callable[[object], list[float]], cap: int, target_ci: float | None, budget_s: float | None,
         min_rounds: int, eliminate: Callable[[list, Race], list[int]] | None = None, budget_after: int = 1,
         hard_s: float | None = None, clock: Callable[[], float] = time.monotonic,
         agree: Callable = lambda decision: decision, on_round: Callable[[int, list], None] | None = None,
         budget_of: str | None = None) -> dict:
    """Rounds over the live arms until every comparison `pairs(arms, table)` names (index pairs into
    `arms`; `table`: the rounds so far, bsbench.core.stats.Race, the noise pooled over every arm) has its
    95% interval within `target_ci`, another round would pass `budget_s`, or `cap` rounds have run;
    `eliminate(arms, table)`, after each round, names the arms (indices) to leave, each told by `leave()`; the budget stops nothing before `budget_after` rounds (2: every comparison gets
    an interval), except that no round starts that would end past `hard_s` (seconds from now); `agree`
    makes every DDP rank take rank 0's decision; `on_round(done, arms)` after each round (the progress
    line); `budget_of` says what `budget_s` is where it is not budget_min (a tune stage's share). Returns the
    stop record (bsbench.core.stopping)."""
    started = clock()
    done, reason, found = 0, None, []
    while reason is None:
        live = [arm for arm in arms if arm.live]
        if not live:
            reason = stopping.CAP
            break
        round_start = clock()
        for arm in round_order(live, done):
            play(arm)
        done += 1
        table = Race([value(arm) for arm in arms])
        found = [half_width(table.compare(a, b)) for a, b in pairs(arms, table)]
        elapsed, round_s = clock() - started, clock() - round_start
        budget_min = budget_s / 60 if budget_s is not None and done >= budget_after else None
        if hard_s is not None and elapsed + round_s > hard_s:
            budget_min = min(budget_min if budget_min is not None else hard_s / 60, hard_s / 60)
        reason = agree(stopping.decide(found, done, cap, target_ci=target_ci, budget_min=budget_min,
                                       elapsed_s=elapsed, round_s=round_s, min_rounds=min_rounds))
        if reason is None and eliminate is not None:
            for i in agree(eliminate(arms, table)):
                arms[i].leave()
            if sum(arm.live for arm in arms) == 1:  # nothing left to compare it with
                reason = stopping.ONE_LEFT
        if on_round is not None:
            on_round(done, arms)
    return stopping.record(reason, done, cap, target_ci, budget_s / 60 if budget_s is not None else None,
                           clock() - started, found, budget_of)
