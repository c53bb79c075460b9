"""mode=tune (conf/mode/tune.yaml): the fastest way to train the configured model on this device within
`budget_min`, and what matters for it, in five stages, each a measurement in one process:

1. edge: the largest batch size that trains (find_max's search, or `tune.max_batch_size`);
2. batch: a geometric grid of batch sizes below the edge (halving from it; your `batch_size` too),
   raced in paired rounds (bsbench.job.rounds);
3. near: the neighbourhood of the grid's leader (the nearest powers of two, the nearest multiples
   of 8, the sizes one apart, and your `batch_size`) and the grid's sizes the racing rule kept, raced
   the same way: its leader is the fastest batch size, and the power-of-two question is one
   comparison of it;
4. knobs: each speed knob toggled at that batch size (channels_last, the 16-bit mixed precisions
   the device runs, fused Adam, and torch.compile with `tune.compile=true`) against it;
5. confirm: every knob that was clearly faster, together, against your starting configuration.

The races drop arms by a racing rule rather than successive halving: after each round (from the
third on), an arm whose paired 99% interval against the current leader lies wholly below zero
leaves. Successive halving drops half the arms per rung by rank alone, so with a handful of arms and
differences of a few percent it would drop arms that are as fast as the leader within the noise; a
racing rule drops only what is clearly slower and leaves, at the end, exactly the set that cannot
be told apart from the fastest, which is the answer the power-of-two question needs. 99% (not 95%)
because the rule looks at every round: a stricter interval keeps the chance of dropping an arm that
is as fast small over many looks.

Every arm of every stage is a result in `<stage>/<arm>/results.json` under the tune's folder, with a
`done.json` per finished stage; `resume=<the tune's folder>` goes on from the first stage without
one. The report (bsbench.report.tune) derives tune.md, the ranked "what matters" table and the plot
from those results alone. This module holds the mode and the arithmetic the run and the report
share; it imports no torch."""

import math

from omegaconf import OmegaConf

from bsbench.core.errors import UserError
from bsbench.core.fields import Status
from bsbench.modes.base import Mode, failure, model_chosen, with_progress
from bsbench.modes.checks import at_least
from bsbench.report.stats import paired

STAGES = ("edge", "batch", "near", "knobs", "confirm")
# each stage's share of budget_min; time a stage does not use goes to the next. A tenth is kept back: the
# arms' warm-ups and a race's first two rounds (an interval needs two) run whatever the budget says
SHARES = {"edge": 0.08, "batch": 0.2, "near": 0.2, "knobs": 0.24, "confirm": 0.18}
DONE_FILE = "done.json"
OBJECTIVES = ("time", "energy")
DROP_CONFIDENCE = 0.99
MIN_ROUNDS = 3  # a race drops nothing and trusts no target before it


def is_power_of_two(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


SMALLEST = 2  # batch normalization cannot train on one image (it needs more than one value per channel)


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


def values(result: dict, objective: str) -> list[float]:
    """What a tune ranks an arm's rounds by, larger is better: samples/s, or images per joule."""
    if objective == "energy":
        return [1 / j for j in result.get("round_joules_per_sample") or [] if j]
    return result.get("round_samples_per_s") or []


def mean_log(values: list[float]) -> float:
    return sum(math.log(v) for v in values) / len(values) if values else -math.inf


def fastest(rates: list[list[float]]) -> int:
    """The arm with the highest geometric mean over its rounds, of those that ran every round (an arm the
    racing rule dropped was clearly slower when it left, whatever its few rounds average)."""
    most = max(len(values) for values in rates)
    return max((i for i, values in enumerate(rates) if len(values) == most), key=lambda i: mean_log(rates[i]))


def contenders(rates: list[list[float]], limit: int = 3) -> list[int]:
    """The arms of a race, other than its leader, that ran every round (the racing rule did not drop
    them), fastest first, at most `limit`: the near race measures them again beside the leader's
    neighbours, so that a batch size far from the leader but as fast is not lost."""
    lead = fastest(rates)
    most = len(rates[lead])
    alive = [i for i, values in enumerate(rates) if len(values) == most and i != lead]
    return sorted(alive, key=lambda i: -mean_log(rates[i]))[:limit]


def clearly_slower(rates: list[list[float]], alive: list[bool]) -> list[int]:
    """The racing rule: the live arms whose paired 99% interval against the leader lies below zero."""
    live = [i for i in range(len(rates)) if alive[i]]
    if not live or min(len(rates[i]) for i in live) < MIN_ROUNDS:
        return []
    lead = max(live, key=lambda i: mean_log(rates[i]))
    dropped = []
    for i in live:
        if i != lead:
            c = paired(rates[i], rates[lead], confidence=DROP_CONFIDENCE)
            if c["ci_high"] is not None and c["ci_high"] < 0:
                dropped.append(i)
    return dropped


def indistinguishable(rates: list[list[float]], lead: int) -> list[int]:
    """The arms whose paired 95% interval against the leader holds zero (or that have none yet)."""
    out = []
    for i, values in enumerate(rates):
        if i == lead:
            out.append(i)
            continue
        c = paired(values, rates[lead])
        if c["ci_low"] is None or c["ci_low"] <= 0 <= c["ci_high"]:
            out.append(i)
    return out


def knob_settings(start: dict, on_cuda: bool, bf16: bool, compile_: bool, builds_optimizer: bool = True) -> list[dict]:
    """The knobs tried at the fastest batch size, each as the keys it changes from the start: the
    other memory format, each 16-bit mixed precision the device runs that is not the start's, fused
    Adam where bsbench builds the optimizer, and torch.compile when asked."""
    knobs = [{"channels_last": not start["channels_last"]}]
    precisions = (["16-mixed"] if on_cuda else []) + (["bf16-mixed"] if bf16 or not on_cuda else [])
    knobs += [{"precision": p} for p in precisions if p != start["precision"]]
    if builds_optimizer:
        knobs.append({"model.fused_adam": not start["model.fused_adam"]})
    if compile_ and not start["compile"]:
        knobs.append({"compile": True})
    return knobs


def combination(knobs: list[dict], effects: list[dict]) -> dict:
    """The knobs that were clearly faster, together: each whose 95% interval lies above zero, and of the
    precisions the fastest such one."""
    best: dict = {}
    precision_gain = 0.0
    for knob, c in zip(knobs, effects):
        if c.get("ci_low") is None or c["ci_low"] <= 0:
            continue
        if "precision" in knob:
            if c["ratio"] > precision_gain:
                precision_gain, best["precision"] = c["ratio"], knob["precision"]
        else:
            best.update(knob)
    return best


class Tune(Mode):
    name = "tune"
    one_device = "tunes"
    sections = ("tune",)
    own_rounds = True
    reports_single_run = True
    resumes_single_run = True

    def check(self, cfg, here):
        from bsbench.job.validate import check_stopping

        spec = cfg.tune
        if cfg.budget_min is None:
            raise UserError("mode=tune needs a time budget, budget_min=null gives it none; use e.g. budget_min=10.")
        check_stopping(cfg)
        if spec.objective not in OBJECTIVES:
            raise UserError(f"tune.objective={spec.objective} is not something tune ranks by; use tune.objective=time "
                            "(samples/s) or tune.objective=energy (joules per image).")
        if spec.max_batch_size is not None:
            at_least(spec.max_batch_size, 1, "tune.max_batch_size", 512)
        at_least(spec.grid_points, 1, "tune.grid_points", 5)
        # unresolved: before the job runs, Hydra's ${hydra:runtime.output_dir} has no value yet
        if OmegaConf.to_container(cfg.trainer, resolve=False).get("default_root_dir") is None:
            raise UserError("mode=tune writes its stages under trainer.default_root_dir, which is null; use its "
                            "default (the run's own directory) or a directory, e.g. trainer.default_root_dir=runs.")
        at_least(cfg.compare.rounds, 2, "compare.rounds", 60)
        at_least(cfg.compare.steps, 1, "compare.steps", 10)
        at_least(cfg.compare.warmup_steps, 0, "compare.warmup_steps", 3)
        at_least(cfg.find_max.max_val, 1, "find_max.max_val", 8192)
        at_least(cfg.find_max.max_trials, 1, "find_max.max_trials", 25)
        if spec.objective == "energy" and here:
            from bsbench.training.energy import unavailable

            why = unavailable(cfg.accelerator)
            if why:
                raise UserError(f"tune.objective=energy ranks by joules per image, which this machine cannot measure "
                                f"({why}); use tune.objective=time.")

    def check_resume(self, cfg, path) -> None:
        """resume=<a tune's folder> with another configuration would mix two tunes' stages: refused
        before anything is written there (Hydra rewrites the folder's .hydra/ when the run starts)."""
        import json
        from pathlib import Path

        from bsbench.core.identity import job_id

        recorded = set()
        for marker in Path(path).glob(f"*/{DONE_FILE}"):
            try:
                recorded.add(json.loads(marker.read_text()).get("job_id"))
            except (OSError, ValueError):
                continue
        if recorded and recorded != {job_id(cfg)}:
            raise UserError(f"resume={path} holds a tune of another configuration; resume it with its own command "
                            f"(its overrides are in {Path(path) / '.hydra' / 'overrides.yaml'}), or tune anew "
                            "without resume.")

    def folder(self, cfg):
        return f"tune{cfg.batch_size}"

    def run(self, cfg, started_at):
        from bsbench.modes.tune_run import run_tune

        return run_tune(cfg, started_at)

    def line(self, r, progress):
        what = f"tune from batch_size={r['batch_size']}{model_chosen(r)} precision={r['precision']}"
        if r["status"] != Status.OK:
            return with_progress(f"{what}: {failure(r)}", progress)
        best = r.get("tune_best") or {}
        shown = "fastest: " + " ".join(f"{k}={_text(v)}" for k, v in best.items())
        rate = r.get("tune_best_samples_per_s")
        if rate:
            shown += f", {rate:.0f} samples/s"
        speedup = r.get("tune_speedup") or {}
        if speedup.get("ratio") is not None:
            shown += f", {speedup['ratio']:+.1%} against the start"
            if speedup.get("ci_low") is not None:
                shown += f" ({speedup['ci_low']:+.1%} to {speedup['ci_high']:+.1%})"
        return with_progress(f"{what}: {shown}", progress)


def _text(value) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


MODE = Tune()
