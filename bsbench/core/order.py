"""The order a sweep runs its jobs in. Timing drifts during a long sweep (a GPU warms up and clocks
down, other load comes and goes), so repeats of one configuration are spread over the sweep instead
of run back to back: every configuration runs once per round, and round r holds repeat r."""

import random

ORDERS = ("interleaved", "shuffled", "grid")


def sweep_order(jobs: list[list[str]], repeats: int, order: str, seed: int) -> list[list[str]]:
    """Each job's overrides with `repeat=<i>` added, `repeats` times, in the given order:
    interleaved: round by round, Hydra's order within a round;
    shuffled: round by round, each round in its own seeded random order;
    grid: Hydra's order, a configuration's repeats back to back."""
    if order == "grid":
        return [[*job, f"repeat={r}"] for job in jobs for r in range(repeats)]
    rng = random.Random(seed)
    ordered = []
    for r in range(repeats):
        round_jobs = list(jobs)
        if order == "shuffled":
            rng.shuffle(round_jobs)
        ordered += [[*job, f"repeat={r}"] for job in round_jobs]
    return ordered


def round_order(items: list, round_: int) -> list:
    """The order of `items` in round `round_` of a paired measurement: rotated by one place every two
    rounds and reversed in every other round (A B C, C B A, B C A, A C B, ...). Over 2 x len(items)
    rounds every item runs in every position equally often, and a linear drift or an item's gain from
    following another falls on all alike; with two items it is A B, B A, B A, A B (ABBA)."""
    if not items:
        return []
    shift = (round_ // 2) % len(items)
    rotated = list(items[shift:]) + list(items[:shift])
    return rotated[::-1] if round_ % 2 else rotated
