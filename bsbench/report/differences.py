"""The verdict's "What differs" section: why a power of two (or a multiple of 8) is faster or slower
than its neighbours, from mode=profile's results. For each such batch size and each neighbour of the
same setting, with at least MIN_RUNS profiled runs each (`repeats=3`):

- the kernels (GPU) or operators (CPU) that one of them ran in every run and the other in none
  (another algorithm chosen);
- those whose time per sample changed beyond the spread of the repeated runs: the two batch sizes'
  ranges over their runs lie further apart than both ranges are wide together (with 3 runs each,
  noise alone does that about 3 times in 1,000), by at least MIN_EFFECT of the step;
- the share of the step spent in matrix multiplications and convolutions.

The unit is the run (a job), each the mean of its profiles: profiles of one process share its state
(where its memory landed, its threads), so their spread is narrower than what separates two jobs of
one configuration, and two jobs of one batch size would then differ "beyond the spread" (measured on
the development CPU: elementwise operators 35% apart between two jobs whose own profiles agreed
within 5%). Kernels below MIN_SHARE of the step on both sides are left out: they explain no
difference worth a line. Plain words first, then a table. Stdlib only, from results.json alone."""

from statistics import fmean

from bsbench.core.fields import Status
from bsbench.report.summary import group_key, label_groups
from bsbench.core.arms import neighbour_pairs

MIN_RUNS = 3
MIN_SHARE = 0.005  # of the step, on at least one side
MIN_EFFECT = 0.005  # a change in time per sample, as a fraction of the step per sample
TABLE_ROWS = 12
WORDS = 3  # differences told in words per pair


class Profiles:
    """One batch size's profiled runs of one setting: per run, each kernel's time per sample (the mean
    over the run's profiles) and the step's."""

    def __init__(self, results: list[dict]):
        names = {op["name"] for r in results for op in r["profile_ops"]}
        self.kind = results[0].get("profile_kind", "operator")
        self.matmul = {op["name"]: op.get("matmul", False) for r in results for op in r["profile_ops"]}
        self.step: list[float] = [fmean(r["profile_step_us_per_sample"]) for r in results]
        self.times: dict[str, list[float]] = {name: [] for name in names}
        for r in results:
            ops = {op["name"]: fmean(op["us_per_sample"]) for op in r["profile_ops"]}
            for name in names:
                self.times[name].append(ops.get(name, 0.0))

    def __len__(self) -> int:
        return len(self.step)

    def mean(self, name: str) -> float:
        return fmean(self.times[name]) if name in self.times else 0.0

    def values(self, name: str) -> list[float]:
        return self.times.get(name) or [0.0] * len(self)

    def share(self, name: str) -> float:
        return self.mean(name) / fmean(self.step)

    def matmul_share(self) -> float:
        return sum(self.mean(n) for n in self.times if self.matmul[n]) / fmean(self.step)


def _profiled(r: dict) -> bool:
    return (r.get("status") == Status.OK and isinstance(r.get("profile_ops"), list)
            and isinstance(r.get("profile_step_us_per_sample"), list) and bool(r["profile_step_us_per_sample"]))


def differences(mine: Profiles, theirs: Profiles) -> list[dict]:
    """The kernels whose time per sample differs between two batch sizes beyond their runs' spread, or
    that only one of them ran, largest difference first."""
    found = []
    for name in set(mine.times) | set(theirs.times):
        a, b = mine.values(name), theirs.values(name)
        if max(mine.share(name), theirs.share(name)) < MIN_SHARE:
            continue
        if all(a) and not any(b):
            change = "only here"
        elif all(b) and not any(a):
            change = "only there"
        elif all(a) and all(b):
            gap = max(min(a) - max(b), min(b) - max(a))
            effect = abs(fmean(a) - fmean(b)) / max(fmean(mine.step), fmean(theirs.step))
            if gap <= (max(a) - min(a)) + (max(b) - min(b)) or effect < MIN_EFFECT:
                continue
            change = "changed"
        else:  # run in some runs of a side only: nothing to tell apart from chance
            continue
        found.append({"name": name, "change": change, "mine": fmean(a), "theirs": fmean(b),
                      "spread": max(max(a) - min(a), max(b) - min(b)), "share": mine.share(name),
                      "their_share": theirs.share(name)})
    return sorted(found, key=lambda d: -abs(d["mine"] - d["theirs"]))


def _short(name: str, width: int = 90) -> str:
    return name if len(name) <= width else name[: width - 1] + "…"


def _us(value: float) -> str:
    return f"{value / 1000:.3g} ms" if value >= 1000 else f"{value:.3g} µs"


def _sentence(d: dict, b: int, n: int) -> str:
    name = f"`{_short(d['name'], 70)}`"
    if d["change"] == "only here":
        return f"{b} ran {name} ({_us(d['mine'])} per image, {d['share']:.0%} of its step), which {n} did not"
    if d["change"] == "only there":
        return f"{n} ran {name} ({_us(d['theirs'])} per image, {d['their_share']:.0%} of its step), which {b} did not"
    relative = d["mine"] / d["theirs"] - 1
    return (f"{name} took {abs(relative):.1%} {'less' if relative < 0 else 'more'} per image at {b} "
            f"({_us(d['mine'])} against {_us(d['theirs'])})")


def pair_markdown(b: int, n: int, mine: Profiles, theirs: Profiles) -> list[str]:
    """One comparison's paragraph and table."""
    what = "kernel" if mine.kind == "kernel" else "operator"
    found = differences(mine, theirs)
    step_b, step_n = fmean(mine.step), fmean(theirs.step)
    head = f"**{b} against {n}** ({len(mine)} and {len(theirs)} runs): "
    if found:
        head += "; ".join(_sentence(d, b, n) for d in found[:WORDS]) + "."
        if len(found) > WORDS:
            more = len(found) - WORDS
            head += f" {more} more {what}{' differs' if more == 1 else 's differ'} (table)."
    else:
        head += (f"no {what} ran at one of them only, and none's time per image differs beyond the spread of the "
                 "repeated runs.")
    head += (f" Matrix multiplications and convolutions took {mine.matmul_share():.0%} of {b}'s step and "
             f"{theirs.matmul_share():.0%} of {n}'s; the whole step took {_us(step_b)} per image at {b} and "
             f"{_us(step_n)} at {n}, {abs(step_b / step_n - 1):.1%} {'more' if step_b > step_n else 'less'} at {b}.")
    lines = [head, ""]
    if found:
        lines += [f"| {what} | {n} (per image) | {b} (per image) | change | spread over runs | share of {b}'s step |",
                  "| --- | --- | --- | --- | --- | --- |"]
        for d in found[:TABLE_ROWS]:
            change = {"only here": f"only at {b}", "only there": f"only at {n}"}.get(
                d["change"], f"{d['mine'] / d['theirs'] - 1:+.1%}" if d["theirs"] else "")
            lines.append(f"| `{_short(d['name'])}` | {_us(d['theirs'])} | {_us(d['mine'])} | {change} | "
                         f"{_us(d['spread'])} | {d['share']:.1%} |")
        lines.append("")
    return lines


def differences_markdown(results: list[dict]) -> str:
    """The section, or "" where no result holds a profile."""
    profiled = [r for r in results if _profiled(r)]
    if not profiled:
        return ""
    labels = label_groups(results)
    groups: dict[str, dict[int, list[dict]]] = {}
    for r in profiled:
        groups.setdefault(group_key(r), {}).setdefault(r["batch_size"], []).append(r)
    lines = ["## What differs in the profiles", "",
             "Each power of two and multiple of 8 against its neighbours, from `mode=profile`'s traces: the kernels "
             "(on a GPU; `aten::` operators by self CPU time on a CPU) that only one of them ran, and those whose time "
             "per image changed beyond the spread of each batch size's repeated runs (their ranges further apart than "
             f"both are wide, by {MIN_EFFECT:.1%} of the step or more), largest difference first (those under "
             f"{MIN_SHARE:.1%} of the step on both sides left out). Each run's figure is the mean of its profiles.", ""]
    pairs = 0
    for key, by_size in groups.items():
        if labels.get(key):
            lines += [f"### {labels[key]}", ""]
        for b, n in neighbour_pairs(by_size):
            mine, theirs = Profiles(by_size[b]), Profiles(by_size[n])
            pairs += 1
            if min(len(mine), len(theirs)) < MIN_RUNS:
                lines += [f"**{b} against {n}**: {len(mine)} and {len(theirs)} profiled runs; telling a difference from "
                          f"the spread needs {MIN_RUNS} of each (run the sweep with repeats={MIN_RUNS}).", ""]
                continue
            lines += pair_markdown(b, n, mine, theirs)
    if not pairs:
        lines += ["No profiled power of two or multiple of 8 has a profiled neighbour (profile e.g. "
                  "`-m batch_size=31,32,33 repeats=3`).", ""]
    return "\n".join(lines)
