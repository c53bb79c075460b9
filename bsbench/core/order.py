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
