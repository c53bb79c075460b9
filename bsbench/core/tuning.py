"""mode=tune's procedure (bsbench.modes.tune is the mode, bsbench.job.runs.tune its measurements on the
device): what a tune measures in which order, how it spends its budget, and the rule that turns what it
measured into advice. Stdlib only, so that the tests put thousands of simulated tunes through this very
code (tests/test_tune_decision.py) and the report reads a finished tune with the same arithmetic.

Five stages, each a race in one process (bsbench.core.racing: every arm in the same rounds, the noise
pooled over all of them, bsbench.core.stats.Race):

1. edge: the largest batch size that trains (find_max's search within the stage's time, or
   `tune.max_batch_size`);
2. knobs: each speed knob toggled at your batch size against your settings (the memory format, the
   16-bit mixed precisions the device runs, fused Adam, torch.compile with `tune.compile=true`), a knob
   leaving the race once its effect is decided either way. First, because these are the large effects:
   on an H200 channels_last was 3.5x and the precision 35%, where the batch size moved the rate by
   fractions of a percent;
3. batch: a geometric grid of batch sizes below the edge, and yours, with the knobs that were faster on,
   raced with a racing rule that drops what is clearly slower;
4. near: the neighbourhood of the grid's leader (the nearest powers of two and multiples of 8, the sizes
   one apart, yours) and the grid's sizes still in contention, raced the same way;
5. confirm: fresh rounds of your settings against the best setting found (and, where it changes both
   the batch size and knobs, against each half of it; where it turns on several knobs, against the best
   without each in turn). The advice is made from these rounds alone: the earlier stages chose what to
   confirm, and a choice made on noise is not confirmed by new rounds.

On several devices (Spec.world_size > 1; DDP), a sixth stage:

6. scale: the advice (or your settings, to keep) on every device against the same on one device, the same
   batch per device, in paired rounds: the scaling efficiency, N devices' samples/s over N times one's,
   with its 95% interval. The knobs stage tries DDP's settings too (DDP_KNOBS).

With a fixed effective batch (`tune.effective_batch`, Spec.effective_batch) every arm carries its
accumulation (ACCUMULATE) beside its micro-batch: the edge stops at one device's share, the batch race
holds every micro-batch that divides it (`ways`), the near race the leader, the sizes in contention and
yours, and the advice gives the micro-batch and its accumulation together.

The decision rule: keep your settings unless a change is clearly faster, its interval against them lying
above zero with every comparison of the confirm counted (Bonferroni: simultaneous 95% intervals), each
interval the race's pooled one or, where the pair's own rounds are noisier, theirs (Race.compare's `own`). Of
several clearly faster changes, the one with the fewest changed keys, unless one with more is clearly
faster than it. Where the budget ended before the confirm, the same rule over the last race that measured
your settings. Under doubt the answer is "keep", with the smallest difference the tune could have shown.

Budget: each stage has a share of `budget_min` (SHARES; a tenth is kept back for what no prediction
sees), taken from what is left when it starts, so that a stage that ends early gives its time to the
next and one that overruns takes from all that follow alike; no arm is warmed up and no round started
that, by what the same work took before (Costs), would end past the budget; an earlier run's time counts
on resume."""

import math
from dataclasses import dataclass, field
from typing import Callable, Protocol

from bsbench.core import racing
from bsbench.core.arms import changes, describe, is_power_of_two
from bsbench.core.errors import UserError
from bsbench.core.stats import Race, describe as statistics, simultaneous

STAGES = ("edge", "knobs", "batch", "near", "confirm", "scale")  # scale: on several devices only
SHARES = {"edge": 0.08, "knobs": 0.27, "batch": 0.2, "near": 0.2, "confirm": 0.15, "scale": 0.1}
KEPT_BACK = 0.1  # of the budget, for what no prediction sees
# where a tune trains on several devices, the DDP settings it tries as knobs (torch's defaults in the start)
DDP_KNOBS = ("ddp.gradient_as_bucket_view", "ddp.static_graph", "ddp.bucket_cap_mb")
DDP_BUCKET_MB = 25  # DistributedDataParallel's bucket size where ddp.bucket_cap_mb is null
DONE_FILE = "done.json"
# what a done.json's stages mean: 2 since the knobs came before the batch races, 3 since the knobs race holds
# the loader's settings and the input pipeline's ceiling (a tune of an earlier one cannot be resumed)
PROCEDURE = 3
OBJECTIVES = ("time", "energy")
CONFIDENCE = 0.95  # of the advice: every interval it rests on holds at once with this confidence
DROP_CONFIDENCE = 0.99  # of the racing rule, which looks after every round: a stricter interval for many looks
MIN_ROUNDS = 3  # a race drops nothing and trusts no target before it
SMALLEST = 2  # batch normalization cannot train on one image (it needs more than one value per channel)
PROGRESS_S = 10.0  # at most one progress line per race this often (and one per stage)
KEEP, CHANGE = "keep", "change"
# the ceiling arm's key (bsbench.training.replay): your batches replayed from the device, no step waiting for data
REPLAY = "replay_batches"
# the loader settings a tune toggles, where the datamodule takes them (bsbench's, or your constructor's)
LOADER = ("data.num_workers", "data.pin_memory", "data.persistent_workers", "data.prefetch_factor")
WORKERS = "data.num_workers"
# tune.effective_batch: the arms of a fixed effective batch carry their accumulation beside the micro-batch
ACCUMULATE = "trainer.accumulate_grad_batches"
RESOLVES = 1.0  # a tune that could not have shown a difference this large (+100%: twofold) resolved nothing


# --- the candidates ---
def edge_tolerance(largest_ok: int) -> int:
    """How close the edge search gets before it stops: within 1/32 of the largest size that ran (the
    fastest batch size is rarely at the last image that fits, and every trial near the edge is the
    most expensive one)."""
    return max(1, largest_ok // 32)


def grid(edge: int, points: int, start: int) -> list[int]:
    """The batch race's candidates: halving from the edge, `points` of them, and the starting batch size."""
    sizes = {min(edge, max(SMALLEST, round(edge / 2**k))) for k in range(points)}
    if start <= edge:
        sizes.add(start)
    return sorted(sizes)


def ways(effective: int, world: int, edge: int) -> list[int]:
    """The micro-batches that make an effective batch (tune.effective_batch): each per-device batch size that
    divides the effective batch's share of one device (its accumulation the quotient), from SMALLEST to the
    edge, largest first (the fastest, as a rule: warmed up first where the stage's time runs short)."""
    share = effective // world
    return [b for b in range(min(share, edge), SMALLEST - 1, -1) if share % b == 0]


def samples(setting: dict) -> int:
    """The samples one device trains on per optimizer step of an arm: its batch size times its accumulation
    (what a round's and a warm-up's cost grows with)."""
    return setting["batch_size"] * (setting.get(ACCUMULATE) or 1)


def neighbourhood(leader: int, edge: int, start: int) -> list[int]:
    """The near race's candidates: the leader, the powers of two on either side of it, the nearest
    multiples of 8 on either side, the sizes one apart (where the leader is a multiple of 8) and the
    starting batch size; none above the edge."""
    low = 2 ** (leader.bit_length() - 1)
    sizes = {leader, low, 2 * low if not is_power_of_two(leader) else leader}
    if leader % 8 == 0:
        sizes |= {leader - 8, leader + 8, leader - 1, leader + 1}
    else:
        sizes |= {leader - leader % 8, leader - leader % 8 + 8}
    sizes.add(start)
    return sorted(s for s in sizes if SMALLEST <= s <= edge)


def knob_settings(start: dict, on_cuda: bool, bf16: bool, compile_: bool, builds_optimizer: bool = True,
                  cores: int = 1) -> list[dict]:
    """The knobs a tune tries, each as the keys it changes from the start: the other memory format, each
    16-bit mixed precision the device runs that is not the start's, fused Adam where bsbench builds the
    optimizer, torch.compile when asked, and the loader's settings the datamodule takes (`loader_knobs`)."""
    knobs = [{"channels_last": not start["channels_last"]}]
    precisions = (["16-mixed"] if on_cuda else []) + (["bf16-mixed"] if bf16 or not on_cuda else [])
    knobs += [{"precision": p} for p in precisions if p != start["precision"]]
    if builds_optimizer:
        knobs.append({"model.fused_adam": not start["model.fused_adam"]})
    if compile_ and not start["compile"]:
        knobs.append({"compile": True})
    return knobs + loader_knobs(start, on_cuda, cores) + ddp_knobs(start)


def ddp_knobs(start: dict) -> list[dict]:
    """On several devices (the start holds DDP's settings): gradients as views of the buckets, the static graph,
    and buckets four times as large."""
    if not all(key in start for key in DDP_KNOBS):
        return []
    bucket = start["ddp.bucket_cap_mb"] or DDP_BUCKET_MB
    return [{"ddp.gradient_as_bucket_view": not start["ddp.gradient_as_bucket_view"]},
            {"ddp.static_graph": not start["ddp.static_graph"]}, {"ddp.bucket_cap_mb": 4 * bucket}]


def loader_knobs(start: dict, on_cuda: bool, cores: int) -> list[dict]:
    """The loader's settings, where the start has them: loader workers (none against a few, or yours against
    none and twice as many, up to the cores this process may use), pinned memory on a GPU, and, with
    workers, keeping them between epochs and twice the batches each prepares ahead."""
    knobs = []
    workers = start.get(WORKERS)
    if isinstance(workers, int):
        counts = [min(4, max(1, cores))] if workers == 0 else [0, min(2 * workers, max(cores, workers))]
        knobs += [{WORKERS: n} for n in dict.fromkeys(counts) if n != workers]
    if on_cuda and isinstance(start.get("data.pin_memory"), bool):
        knobs.append({"data.pin_memory": not start["data.pin_memory"]})
    if isinstance(workers, int) and workers > 0:
        if isinstance(start.get("data.persistent_workers"), bool):
            knobs.append({"data.persistent_workers": not start["data.persistent_workers"]})
        if isinstance(start.get("data.prefetch_factor"), int) and start["data.prefetch_factor"] > 0:
            knobs.append({"data.prefetch_factor": 2 * start["data.prefetch_factor"]})
    return knobs


def promising(knobs: list[dict], effects: list[dict]) -> dict:
    """The knobs the later stages turn on: each whose 95% interval against the start (one comparison's, not
    the family's: a choice the confirm tests again on fresh rounds) lies above zero, and of the values of one
    key (the precisions, the worker counts) the fastest such one. Without loader workers, the settings of
    workers (kept between epochs, batches prepared ahead) are not turned on: a loader refuses them."""
    best: dict = {}
    gain: dict = {}
    for knob, c in zip(knobs, effects):
        if c.get("ci_low") is None or c["ci_low"] <= 0:
            continue
        for key, value in knob.items():
            if c["ratio"] > gain.get(key, 0.0):
                gain[key], best[key] = c["ratio"], value
    if best.get(WORKERS) == 0:
        for key in ("data.persistent_workers", "data.prefetch_factor"):
            best.pop(key, None)
    return best


def edge_words(stop: str, searched: bool) -> str:
    """What a tune's memory edge is, in words (the terminal's and tune.md's)."""
    if stop == "budget":
        return "the largest that ran in the edge stage's time, not a memory limit"
    if stop == "tune.max_batch_size":
        return "given by tune.max_batch_size"
    if stop == "tune.effective_batch":
        return "one device's share of tune.effective_batch: no larger micro-batch makes it"
    if not searched:
        limit = "the data set's size" if stop == "dataset" else "find_max.max_val"
        return f"on the CPU nothing runs out of device memory: {limit}; a batch size too slow for the budget is left out"
    return f"the search ended at: {stop}"


# --- what a race measured ---
def values(result: dict, objective: str) -> list[float]:
    """What a tune ranks an arm's rounds by, larger is better: samples/s, or images per joule."""
    if objective == "energy":
        return [1 / j for j in result.get("round_joules_per_sample") or [] if j]
    return result.get("round_samples_per_s") or []


def mean_log(rounds: list[float]) -> float:
    return sum(math.log(v) for v in rounds) / len(rounds) if rounds else -math.inf


def fastest(rates: list[list[float]]) -> int:
    """The arm with the highest geometric mean over its rounds, of those that ran every round (an arm the
    racing rule dropped was clearly slower when it left, whatever its few rounds average)."""
    most = max(len(v) for v in rates)
    return max((i for i, v in enumerate(rates) if len(v) == most), key=lambda i: mean_log(rates[i]))


def contenders(rates: list[list[float]], limit: int = 3) -> list[int]:
    """The arms of a race, other than its leader, that ran every round (the racing rule did not drop
    them), fastest first, at most `limit`: the near race measures them again beside the leader's
    neighbours, so that a batch size far from the leader but as fast is not lost."""
    lead = fastest(rates)
    most = len(rates[lead])
    alive = [i for i, v in enumerate(rates) if len(v) == most and i != lead]
    return sorted(alive, key=lambda i: -mean_log(rates[i]))[:limit]


def clearly_slower(table: Race, alive: list[bool]) -> list[int]:
    """The batch races' racing rule: the live arms whose 99% interval against the leader lies below zero,
    once every live arm has MIN_ROUNDS rounds."""
    live = [i for i in range(len(alive)) if alive[i] and table.rounds(i)]
    if len(live) < 2 or min(table.rounds(i) for i in live) < MIN_ROUNDS:
        return []
    lead = max(live, key=table.mean)
    dropped = []
    for i in live:
        if i != lead:
            c = table.compare(i, lead, DROP_CONFIDENCE)
            if c["ci_high"] is not None and c["ci_high"] < 0:
                dropped.append(i)
    return dropped


def decided(table: Race, alive: list[bool], base: int = 0) -> list[int]:
    """The knobs race's rule: the live arms whose 99% interval against the base (your settings) excludes zero,
    faster or slower. Each knob is compared with your settings, not with the other knobs (a knob slower than
    another may still be one to turn on beside it), and once its effect is known it needs no more rounds."""
    live = [i for i in range(len(alive)) if alive[i] and table.rounds(i) and i != base]
    if not live or min(table.rounds(i) for i in live) < MIN_ROUNDS:
        return []
    out = []
    for i in live:
        c = table.compare(i, base, DROP_CONFIDENCE)
        if c["ci_low"] is not None and (c["ci_low"] > 0 or c["ci_high"] < 0):
            out.append(i)
    return out


def indistinguishable(rates: list[list[float]], lead: int, confidence: float = CONFIDENCE) -> list[int]:
    """The arms whose interval against the leader (at `confidence`) holds zero (or that have none yet)."""
    table = Race(rates)
    out = []
    for i in range(len(rates)):
        c = table.compare(i, lead, confidence) if i != lead else {}
        if i == lead or c["ci_low"] is None or c["ci_low"] <= 0 <= c["ci_high"]:
            out.append(i)
    return out


def measured(results: list[dict], objective: str) -> list[dict]:
    return [r for r in results if r.get("status") == "ok" and values(r, objective)]


def same(setting: dict, start: dict) -> bool:
    return not changes(setting, start)


# --- the decision ---
def against_start(results: list[dict], start: dict, objective: str) -> tuple[list[dict], list[dict]] | None:
    """Every measured arm of a race against the arm of your settings in it, each interval simultaneous
    over all of them; None where the race did not measure your settings beside another arm."""
    arms = measured(results, objective)
    base = next((i for i, r in enumerate(arms) if same(r["compare_setting"], start)), None)
    if base is None or len(arms) < 2:
        return None
    table = Race([values(r, objective) for r in arms])
    others = [i for i in range(len(arms)) if i != base]
    level = simultaneous(CONFIDENCE, len(others))
    found = [{**table.compare(i, base, level, own=True), "setting": arms[i]["compare_setting"], "index": i,
              "confidence": level, "comparisons": len(others), "stage": arms[i].get("tune_stage")} for i in others]
    return found, arms


def decide(races: dict[str, list[dict]], start: dict, objective: str, budget_min: float) -> dict:
    """The advice from a tune's races (stage -> its arms' results): keep the start unless a change is
    clearly faster than it (see the module's docstring). Returns the tune's decision fields."""
    basis = None  # the last race that compared your settings with an interval (or, failing that, at all)
    for stage in ("confirm", "near", "batch", "knobs"):
        found = against_start(races.get(stage) or [], start, objective)
        if found is not None and any(c["ci_low"] is not None for c in found[0]):
            basis = found
            break
        basis = basis or found
    if basis is None:
        return {"tune_decision": KEEP, "tune_best": dict(start), "tune_speedup": _none("nothing was measured against "
                                                                                     "your settings"),
                "tune_resolution": resolution(None, budget_min), "tune_basis": None,
                "tune_best_values": []}
    found, arms = basis
    table = Race([values(r, objective) for r in arms])
    clear = sorted((c for c in found if c["ci_low"] is not None and c["ci_low"] > 0),
                   key=lambda c: (changed(c["setting"], start), -c["ratio"]))
    stage = found[0]["stage"]
    if not clear:
        base = next(r for r in arms if same(r["compare_setting"], start))
        widest = [c["detectable"] for c in found if c["detectable"] is not None]
        return {"tune_decision": KEEP, "tune_best": dict(start), "tune_speedup": _none("nothing measured was clearly "
                                                                                     "faster"),
                "tune_resolution": resolution(max(widest) if widest else None, budget_min), "tune_basis": stage,
                "tune_best_values": values(base, objective)}
    pick = clear[0]
    for c in clear[1:]:
        if changed(c["setting"], start) > changed(pick["setting"], start):
            between = table.compare(c["index"], pick["index"], pick["confidence"], own=True)
            if between["ci_low"] is not None and between["ci_low"] > 0:
                pick = c
    speedup = {k: pick[k] for k in ("ratio", "ci_low", "ci_high", "confidence", "comparisons", "df")}
    return {"tune_decision": CHANGE, "tune_best": {**way_of(pick["setting"]), **changes(pick["setting"], start)},
            "tune_speedup": {**speedup, "reason": None}, "tune_resolution": None, "tune_basis": stage,
            "tune_best_values": values(arms[pick["index"]], objective)}


def changed(setting: dict, start: dict) -> int:
    """How many changes an arm makes from the start: its keys that differ, a micro-batch and the accumulation
    that makes the same effective batch with it one change, as a batch size is one."""
    keys = changes(setting, start)
    return len(keys) - (1 if "batch_size" in keys and ACCUMULATE in keys else 0)


def way_of(setting: dict) -> dict:
    """An arm's batch size, and its accumulation where it has one (a fixed effective batch): the keys the
    advice always gives together."""
    return {k: setting[k] for k in ("batch_size", ACCUMULATE) if k in setting}


def scaling(results: list[dict], world: int) -> dict:
    """A scale race's efficiency: N devices' samples/s over N times one device's (1: perfect), from the paired
    rounds' ratio and its 95% interval; its `reason` where the race did not measure both."""
    arms = measured(results, "time")
    many = next((r for r in arms if r["compare_setting"].get("devices") != 1), None)
    one = next((r for r in arms if r["compare_setting"].get("devices") == 1), None)
    out = {"devices": world, "setting": many["compare_setting"] if many else None, "efficiency": None, "ci_low": None,
           "ci_high": None, "speedup": None, "confidence": CONFIDENCE, "rounds": 0}
    if many is None or one is None:
        return {**out, "reason": "the budget ended before the scale stage measured both"}
    c = Race([values(many, "time"), values(one, "time")]).compare(0, 1, CONFIDENCE, own=True)

    def efficiency(ratio: float | None) -> float | None:
        return None if ratio is None else (1 + ratio) / world

    return {**out, "efficiency": efficiency(c["ratio"]), "ci_low": efficiency(c["ci_low"]),
            "ci_high": efficiency(c["ci_high"]), "speedup": 1 + c["ratio"], "rounds": c["pairs"],
            "reason": None if c["ci_low"] is not None else "one round, no interval"}


def _none(reason: str) -> dict:
    return {"ratio": None, "ci_low": None, "ci_high": None, "confidence": None, "comparisons": 0, "df": None,
            "reason": reason}


def resolution(detectable: float | None, budget_min: float) -> dict:
    """The smallest difference this tune could have shown (80% power, at the family's confidence), and what
    a budget four times as large would show: the rounds grow with the budget and an interval narrows with
    their square root, so about half."""
    larger = round(4 * budget_min, 1)
    if detectable is None:
        return {"detectable": None, "budget_min": larger, "detectable_then": None}
    return {"detectable": detectable, "budget_min": larger, "detectable_then": math.expm1(math.log1p(detectable) / 2)}


# --- the budget ---
class Budget:
    """The tune's time: `budget_s` in all, counted from `spent_s` before now (a resumed tune's earlier runs),
    shared by the `stages` it runs (the scale stage on several devices only) by their SHARES."""

    def __init__(self, budget_s: float, clock: Callable[[], float], spent_s: float = 0.0,
                 stages: tuple[str, ...] = STAGES[:-1]):
        self.total, self.clock, self.stages = budget_s, clock, stages
        self.t0 = clock() - spent_s

    def elapsed(self) -> float:
        return self.clock() - self.t0

    def left(self) -> float:
        return self.total - self.elapsed()

    def stage_s(self, stage: str) -> float:
        """The stage's share of what is left of the budget's shared part, by its share of what is to come."""
        to_come = self.stages[self.stages.index(stage):]
        soft_left = (1 - KEPT_BACK) * self.total - self.elapsed()
        return max(0.0, soft_left * SHARES[stage] / sum(SHARES[s] for s in to_come))


class Costs:
    """What warming an arm up and playing one round of it took so far, by the samples of one of its steps
    (its batch size, times its accumulation where it has one): the budget's predictions. Once two sizes were
    seen, a line through them (a fixed part, the Trainer and model built, and a part per image; least
    squares, neither below zero); before that, the seconds per image of the most expensive seen, never
    less than the cheapest took (a larger batch costs at most proportionally more)."""

    def __init__(self):
        self.seen: dict[str, list[tuple[int, float]]] = {}

    def add(self, kind: str, batch_size: int, seconds: float) -> None:
        self.seen.setdefault(kind, []).append((batch_size, seconds))

    def predict(self, kind: str, batch_size: int) -> float:
        seen = self.seen.get(kind, [])
        if not seen:
            return 0.0
        if len({b for b, _ in seen}) < 2:
            return max(min(t for _, t in seen), max(t / b for b, t in seen) * batch_size)
        n = len(seen)
        mean_b, mean_t = sum(b for b, _ in seen) / n, sum(t for _, t in seen) / n
        slope = max(0.0, sum((b - mean_b) * (t - mean_t) for b, t in seen) / sum((b - mean_b) ** 2 for b, _ in seen))
        fixed = max(0.0, mean_t - slope * mean_b)
        return fixed + slope * batch_size


# --- the procedure ---
class Arm(Protocol):
    setting: dict

    @property
    def live(self) -> bool: ...

    def leave(self) -> None: ...


class Lab(Protocol):
    """What the procedure needs from whatever measures: the device (bsbench.job.runs.tune) or a simulation."""

    def clock(self) -> float: ...
    def say(self, line: str) -> None: ...
    def spent(self) -> float: ...  # seconds an earlier run of this tune spent (resume=)
    def edge(self, seconds: float, costs: Costs) -> int: ...  # the memory edge, found within `seconds`
    def knobs(self) -> list[dict]: ...
    def ceiling(self) -> dict | None: ...  # the input pipeline's ceiling arm's keys (REPLAY), where it has one
    def done(self, stage: str) -> list[dict] | None: ...  # a stage finished before (resume=): its results
    def forget(self, stage: str) -> None: ...  # a stage finished before, to be measured again
    def begin(self, stage: str) -> None: ...
    def warmed(self, setting: dict) -> bool: ...
    def warm(self, setting: dict) -> Arm: ...
    def play(self, arm: Arm) -> None: ...
    def value(self, arm: Arm) -> list[float]: ...
    def keep_only(self, settings: list[dict]) -> None: ...
    def save(self, stage: str, arms: list[Arm], settings: list[dict], stop: dict, elapsed_s: float) -> list[dict]: ...


@dataclass
class Spec:
    start: dict  # the starting settings: batch_size and every knob's value
    budget_min: float
    grid_points: int = 5
    objective: str = "time"
    target_ci: float | None = 0.01
    cap: int = 200  # rounds a race runs at most
    effective_batch: int | None = None  # tune.effective_batch: the samples per optimizer step, kept (all ranks')
    world_size: int = 1  # the ranks that share the effective batch


@dataclass
class Procedure:
    lab: Lab
    spec: Spec
    costs: Costs = field(default_factory=Costs)
    skipped: list[str] = field(default_factory=list)
    races: dict[str, list[dict]] = field(default_factory=dict)
    # a stage measured (or left out) in this run: what an earlier run measured after it rested on other
    # outcomes (another leader, knobs), so it is measured again, never read back
    anew: bool = False

    def __post_init__(self):
        # on several devices a last stage measures how the advice scales: N devices against one
        self.stages = STAGES if self.spec.world_size > 1 else STAGES[:-1]
        self.budget = Budget(self.spec.budget_min * 60, self.lab.clock, self.lab.spent(), self.stages)

    def run(self) -> dict:
        spec, start = self.spec, self.spec.start
        self.lab.say(f"tune: stage 1 of {len(self.stages)}, the memory edge ({_minutes(self.budget.left())} of "
                     f"budget_min={spec.budget_min:g} left)")
        edge = self.lab.edge(self.budget.stage_s("edge"), self.costs)
        base = self.way(self._base_size(edge))
        knobs, ceiling = self.lab.knobs(), self.lab.ceiling()
        tried = self.race("knobs", [base] + [{**base, **k} for k in knobs + ([ceiling] if ceiling else [])],
                          lambda arms, table: [(i, 0) for i in range(1, len(arms)) if arms[i].live],
                          lambda arms, table: decided(table, [a.live for a in arms]))
        effects = self._effects(tried, base, knobs)
        # the same steps without waiting for data against yours: what your input pipeline costs (a knob of none)
        pipeline = self._effects(tried, base, [ceiling])[0] if ceiling else {}
        chosen = promising(knobs, effects)
        at = lambda b: {**self.way(b), **chosen}  # noqa: E731 - the batch races' arms: the start, the knobs chosen

        # a fixed effective batch: every way to make it that fits; else a grid halving from the edge
        sizes = ways(spec.effective_batch, spec.world_size, edge) if spec.effective_batch else \
            grid(edge, spec.grid_points, start["batch_size"])
        self.lab.keep_only([base, at(base["batch_size"])])
        first = self.race("batch", [at(b) for b in sizes], self.against_leader, self.slower)
        leader = self.leader(first) or base["batch_size"]
        # the leader's neighbourhood (a fixed effective batch has none: its batch race held every way)
        near_sizes = {leader, base["batch_size"]} if spec.effective_batch else \
            set(neighbourhood(leader, edge, start["batch_size"]))
        raced = measured(first, spec.objective)
        if raced:  # the grid's sizes as fast as its leader as far as its rounds could tell: raced again
            near_sizes |= {raced[i]["batch_size"] for i in contenders([values(r, spec.objective) for r in raced])}
        near_settings = [at(b) for b in sorted(near_sizes, reverse=bool(spec.effective_batch))]
        if len(near_settings) > 1:  # one left: nothing to race it against
            self.lab.keep_only([base, *near_settings])
            near = self.race("near", near_settings, self.against_leader, self.slower)
            leader = self.leader(near) or leader

        best = at(leader)
        self.lab.keep_only([base, best, *self.halves(best, chosen)])  # the confirm's arms
        found = self.confirm(start, best, chosen, edge)
        scaled = self.scale(found) if spec.world_size > 1 else {}
        self.lab.keep_only([])
        step = {}
        if spec.effective_batch and spec.objective == "time" and found.get("tune_best_samples_per_s"):
            # the time per optimizer step: the effective batch (all ranks') over samples/s (all ranks')
            step = {"tune_step_time_s": spec.effective_batch / found["tune_best_samples_per_s"]}
        return {**found, "tune_edge": edge, "tune_start": dict(start), "tune_skipped": self.skipped,
                "tune_elapsed_s": self.budget.elapsed(), "tune_chosen_knobs": chosen,
                "tune_pipeline": pipeline or None, "tune_effective_batch": spec.effective_batch, **step, **scaled}

    def scale(self, found: dict) -> dict:
        """The scale stage: the advised setting (or yours, to keep) on every device against the same on one
        device, the same batch per device, in paired rounds (rank 0 trains the one-device arm while the others
        wait); its efficiency, the samples/s of N devices over N times one's, with its 95% interval."""
        start = self.spec.start
        advised = {**way_of(found["tune_best"]), **changes(found["tune_best"], start)}
        self.lab.keep_only([advised])
        raced = self.race("scale", [advised, {**advised, "devices": 1}],
                          lambda arms, table: [(0, 1)] if all(a.live for a in arms) else [])
        return {"tune_scaling": scaling(raced, self.spec.world_size)}

    def way(self, batch_size: int) -> dict:
        """An arm's batch size, with the accumulation that makes the effective batch where one is kept."""
        if not self.spec.effective_batch:
            return {"batch_size": batch_size}
        share = self.spec.effective_batch // self.spec.world_size
        return {"batch_size": batch_size, ACCUMULATE: share // batch_size}

    def _base_size(self, edge: int) -> int:
        """The batch size the knobs are tried at: yours, or where it does not fit, the largest that does (and,
        with a fixed effective batch, makes it)."""
        start = self.spec.start["batch_size"]
        if start <= edge:
            return start
        if not self.spec.effective_batch:
            return edge
        fits = ways(self.spec.effective_batch, self.spec.world_size, edge)
        if not fits:
            raise UserError(f"no micro-batch that makes tune.effective_batch={self.spec.effective_batch} trains here: "
                            f"the largest batch size that does is {edge} and none from {SMALLEST} to it divides "
                            f"{self.spec.effective_batch // self.spec.world_size}; use an effective batch with more "
                            "divisors, e.g. a power of two.")
        return fits[0]

    def halves(self, best: dict, chosen: dict) -> list[dict]:
        """The confirm's arms besides yours and the best: where the best changes both the batch size and knobs,
        each half of it; where it turns on several knobs, the best without each of them in turn. The rule then
        advises the fewest changes unless more are clearly faster, so that no knob its own rounds do not show
        faster is pasted."""
        start, out = self.spec.start, []
        base = {k: start[k] for k in way_of(best) if k in start}
        if chosen and best["batch_size"] != start["batch_size"]:
            out += [{**base, **chosen}, self.way(best["batch_size"])]
        if len(chosen) > 1:
            out += [{**self.way(best["batch_size"]), **{k: v for k, v in chosen.items() if k != key}} for key in chosen]
        unique = list({describe(s): s for s in out}.values())
        return [s for s in unique if not same(s, start) and describe(s) != describe(best)]

    def confirm(self, start: dict, best: dict, chosen: dict, edge: int) -> dict:
        spec = self.spec
        if start["batch_size"] > edge:  # your settings do not fit: the best that does, measured alone
            confirmed = self.race("confirm", [best], lambda arms, table: [])
            rate = statistics(values(confirmed[0], spec.objective) if confirmed else [], log=True)
            return {"tune_decision": CHANGE, "tune_best": best, "tune_basis": "confirm" if confirmed else None,
                    "tune_speedup": _none(f"batch_size={start['batch_size']} does not fit in memory here (the edge "
                                          f"is {edge})"), "tune_resolution": None,
                    "tune_best_samples_per_s": rate["mean"], "tune_best_ci": [rate["ci_low"], rate["ci_high"]]}
        base = way_of(start)
        candidates = [c for c in [best, *self.halves(best, chosen)] if not same(c, start)]
        if candidates:
            self.race("confirm", [base, *candidates], lambda arms, table: [(i, 0) for i in range(1, len(arms))])
        decision = decide(self.races, start, spec.objective, spec.budget_min)
        if decision["tune_basis"] not in (None, "confirm"):  # why the advice rests on an earlier race
            decision["tune_basis_reason"] = ("nothing to confirm: the best found was your settings" if not candidates
                                             else "the budget ended before the confirm" if "confirm" in self.skipped
                                             else "the confirm's rounds gave no interval")
        rate = statistics(decision.pop("tune_best_values"), log=True)
        return {**decision, "tune_best_samples_per_s": rate["mean"], "tune_best_ci": [rate["ci_low"], rate["ci_high"]]}

    def _effects(self, tried: list[dict], base: dict, knobs: list[dict]) -> list[dict]:
        """Each knob's 95% interval against the start in the knobs race (one comparison's)."""
        arms = measured(tried, self.spec.objective)
        names = [describe(r["compare_setting"]) for r in arms]
        if describe(base) not in names:
            return [{} for _ in knobs]
        table = Race([values(r, self.spec.objective) for r in arms])
        at = names.index(describe(base))
        return [table.compare(names.index(describe({**base, **k})), at) if describe({**base, **k}) in names else {}
                for k in knobs]

    def leader(self, results: list[dict]) -> int | None:
        arms = measured(results, self.spec.objective)
        return arms[fastest([values(r, self.spec.objective) for r in arms])]["batch_size"] if arms else None

    @staticmethod
    def against_leader(arms: list, table: Race) -> list[tuple[int, int]]:
        live = [i for i, a in enumerate(arms) if a.live and table.rounds(i)]
        if len(live) < 2:
            return []
        lead = max(live, key=table.mean)
        return [(i, lead) for i in live if i != lead]

    @staticmethod
    def slower(arms: list, table: Race) -> list[int]:
        """The batch races' rule: what is clearly slower than the leader leaves."""
        return clearly_slower(table, [a.live for a in arms])

    def race(self, stage: str, settings: list[dict], pairs, drop=None) -> list[dict]:
        """One stage's race over `settings` (its results; read back where the stage was done before): the arms
        the budget affords warmed up, then rounds until the stage's share, the target or the cap; `pairs(arms,
        table)`: the comparisons the target waits for; `drop(arms, table)`: the arms that leave after a round
        (None: none leaves)."""
        found = self.lab.done(stage)
        if found is not None and self.anew:
            self.lab.forget(stage)
        elif found is not None:
            order = {describe(s): i for i, s in enumerate(settings)}
            self.races[stage] = sorted(found, key=lambda r: order.get(describe(r["compare_setting"]), len(order)))
            return self.races[stage]
        number = self.stages.index(stage) + 1
        self.anew = True
        seconds, started = self.budget.stage_s(stage), self.lab.clock()
        arms = self._warm(stage, settings, seconds) if settings else []
        if not arms or len(arms) < min(2, len(settings)):
            self.skipped.append(stage)
            why = "the budget is spent" if self.budget.left() <= 0 else \
                f"its arms would not fit in the {_minutes(self.budget.left())} left, by what such work took so far"
            self.lab.say(f"tune: stage {number} of {len(self.stages)}, {stage}: not run, {why} "
                         "(resume=<this run's folder> with a larger budget_min runs it)")
            self.lab.keep_only([])
            return []
        spec = self.spec
        progress = Progress(self, stage, [a.setting for a in arms])

        def play(arm) -> None:
            t = self.lab.clock()
            self.lab.play(arm)
            self.costs.add("round", samples(arm.setting), self.lab.clock() - t)

        stop = racing.race(arms, play, pairs, value=self.lab.value, cap=spec.cap, target_ci=spec.target_ci,
                           budget_s=max(0.0, seconds - (self.lab.clock() - started)), min_rounds=MIN_ROUNDS,
                           eliminate=drop, budget_after=2, hard_s=max(0.0, self.budget.left()),
                           clock=self.lab.clock, on_round=progress.round,
                           budget_of=f"the {stage} stage's share of budget_min={spec.budget_min:g}")
        progress.end(stop)
        self.races[stage] = self.lab.save(stage, arms, settings, stop, self.budget.elapsed())
        return self.races[stage]

    def _warm(self, stage: str, settings: list[dict], seconds: float) -> list:
        """The arms of a stage, warmed up, as many as its time affords: none whose warm-up and two rounds of every
        arm so far would, by what such work took before, end past the budget, nor, from the third arm on, past
        the stage's `seconds` (a batch size too slow to measure in the time is left out, and its results say
        so)."""
        self.lab.begin(stage)
        number, started = self.stages.index(stage) + 1, self.lab.clock()
        self.lab.say(f"tune: stage {number} of {len(self.stages)}, {_stage_words(stage, settings)} "
                     f"({_minutes(self.budget.left())} left)")
        arms = []
        for setting in settings:
            size = samples(setting)
            fresh = not self.lab.warmed(setting)
            # its warm-up, and two rounds of every arm so far and of it: an interval needs two
            needed = (self.costs.predict("warm", size) if fresh else 0.0) + 2 * sum(
                self.costs.predict("round", samples(a.setting)) for a in arms) + 2 * self.costs.predict("round", size)
            # two arms make a race: those on the budget alone, the others on the stage's time too
            if needed >= (self.budget.left() if len(arms) < 2 else
                          min(self.budget.left(), seconds - (self.lab.clock() - started))):
                continue
            t = self.lab.clock()
            arm = self.lab.warm(setting)
            if fresh:
                self.costs.add("warm", size, self.lab.clock() - t)
            arms.append(arm)
        return arms


class Progress:
    """A race's lines on the terminal: one as each round ends, at most every PROGRESS_S seconds, and one as
    the race ends: the round, the leader and its rate, the time left."""

    def __init__(self, procedure: Procedure, stage: str, settings: list[dict]):
        self.p, self.stage = procedure, stage
        self.keys = [k for k in dict.fromkeys(k for s in settings for k in s)
                     if len({str(s.get(k)) for s in settings}) > 1] or ["batch_size"]
        self.last = procedure.lab.clock()

    def leader(self, arms) -> str:
        live = [a for a in arms if a.live and self.p.lab.value(a)]
        if not live:
            return "no arm left"
        lead = max(live, key=lambda a: mean_log(self.p.lab.value(a)))
        rate = math.exp(mean_log(self.p.lab.value(lead)))
        unit = "samples/s" if self.p.spec.objective == "time" else "images/J"
        name = describe(lead.setting, self.keys) if not same(lead.setting, self.p.spec.start) else "your settings"
        return f"leader {name} ({rate:,.4g} {unit}), {len(live)} of {len(arms)} arms left"

    def round(self, done: int, arms) -> None:
        now = self.p.lab.clock()
        if now - self.last >= PROGRESS_S:
            self.last = now
            self.p.lab.say(f"tune: {self.stage}, round {done}: {self.leader(arms)}; "
                           f"{_minutes(self.p.budget.left())} left")

    def end(self, stop: dict) -> None:
        why = {"target_ci": "on target", "budget_min": "its time spent", "cap": "all rounds run",
               "one_left": "every other arm decided and out"}[stop["stop"]]
        self.p.lab.say(f"tune: {self.stage} done after {stop['rounds']} rounds ({why})")


def _minutes(seconds: float) -> str:
    return f"{max(0.0, seconds) / 60:.1f} min"


def _stage_words(stage: str, settings: list[dict]) -> str:
    sizes = sorted({s["batch_size"] for s in settings})
    if stage in ("batch", "near") and any(ACCUMULATE in s for s in settings):
        made = samples(settings[0])
        return (f"{stage}: micro-batch × accumulation, each making {made} samples per step: "
                + ", ".join(f"{s['batch_size']}×{s[ACCUMULATE]}" for s in settings))
    if stage == "knobs":
        return f"each knob at batch_size={sizes[0]} against your settings, {len(settings) - 1} knobs"
    if stage == "confirm":
        return f"your settings against the best found, {len(settings)} arms"
    if stage == "scale":
        return f"scale: {describe(settings[0])} on every device against one, the same batch per device"
    return f"{stage}: batch sizes {', '.join(map(str, sizes))}"


def run(lab: Lab, spec: Spec) -> dict:
    """A whole tune: its decision fields (`tune_decision`, `tune_best`, `tune_speedup`, ...)."""
    return Procedure(lab, spec).run()
