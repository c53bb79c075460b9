"""mode=tune's part of the report, from its results alone (bsbench.core.tuning describes the stages and the
decision rule): tune.md (the advice, change or keep, with its interval; what matters, ranked by evidence;
the batch sizes that cannot be told apart from the fastest; a snippet to paste where there is something
to change) and tune.png (samples/s against batch size)."""

import math
from pathlib import Path

from matplotlib.figure import Figure

from bsbench.core import tuning
from bsbench.core.arms import changes, describe as named, is_power_of_two, text
from bsbench.core.results import write_atomic
from bsbench.core.stats import Race, describe, readable, resolved, simultaneous
from bsbench.modes.tune import scaling_words
from bsbench.report.plots import axis_top, interval_bars, save_png
from bsbench.report.verdict import BUSY  # the words, and the gid of the ring around a busy race's point


def _pct(x) -> str:
    return "" if x is None else f"{x:+.1%}"


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _numbers(values, positive: bool = False) -> bool:
    return isinstance(values, list) and all(_number(v) and (v > 0 or not positive) for v in values)


def _usable(r: dict) -> bool:
    """A tune's result whose fields are what this report computes with (a results.json may hold anything:
    one that is not is left out, as the summary table leaves out an unreadable file)."""
    if r.get("tune_stage") == "edge":
        return isinstance(r.get("max_batch_size"), int)
    if r.get("tune_stage") in tuning.STAGES:
        return (isinstance(r.get("compare_setting"), dict) and isinstance(r.get("batch_size"), int)
                and isinstance(r["compare_setting"].get("batch_size"), int)
                and _numbers(r.get("round_samples_per_s") or [], positive=True)
                and _numbers(r.get("round_joules_per_sample") or [], positive=True))
    speedup, best, start = r.get("tune_speedup"), r.get("tune_best"), r.get("tune_start")
    return (isinstance(best, dict) and isinstance(best.get("batch_size"), int) and isinstance(speedup, dict)
            and r.get("tune_decision") in (tuning.KEEP, tuning.CHANGE)
            and all(speedup.get(k) is None or _number(speedup[k]) for k in ("ratio", "ci_low", "ci_high", "confidence"))
            and isinstance(start, dict) and isinstance(start.get("batch_size"), int)
            and isinstance(r.get("tune_resolution") or {}, dict)
            and all(r.get(k) is None or _number(r[k]) for k in ("tune_best_samples_per_s", "tune_elapsed_s"))
            and (r.get("tune_best_ci") is None or (_numbers([v for v in r["tune_best_ci"] if v is not None])
                                                   and len(r["tune_best_ci"]) == 2)))


def tunes(results: list[dict]) -> dict[str, dict]:
    """The tunes among the results, by tune: each stage's results and the tune's own summary."""
    found: dict[str, dict] = {}
    for r in results:
        key = r.get("tune_job_id") or r.get("job_id")
        if r.get("mode") != "tune" or not isinstance(key, str) or not _usable(r):
            continue
        one = found.setdefault(key, {"stages": {}, "summary": None})
        if r.get("tune_stage") in tuning.STAGES:
            one["stages"].setdefault(r["tune_stage"], []).append(r)
        elif r.get("status") == "ok":
            one["summary"] = r
    return {k: v for k, v in found.items() if v["stages"]}


def _objective(one: dict) -> str:
    for results in one["stages"].values():
        for r in results:
            objective = ((r.get("config") or {}).get("tune") or {}).get("objective")
            if objective in tuning.OBJECTIVES:
                return objective
    return "time"


def _start(one: dict) -> dict:
    if one["summary"] is not None:
        return one["summary"]["tune_start"]
    for results in one["stages"].values():
        for r in results:
            if isinstance(r.get("tune_start"), dict) and isinstance(r["tune_start"].get("batch_size"), int):
                return r["tune_start"]
    return {}


def _busy(*results: dict) -> bool:
    return any(r.get("busy") is True for r in results)


WAY = ("batch_size", tuning.ACCUMULATE)  # an arm's batch size and, with a fixed effective batch, its accumulation


def knob_keys(setting: dict) -> dict:
    """An arm's keys other than its batch size and accumulation: the knobs it turns."""
    return {k: v for k, v in setting.items() if k not in WAY}


def _knobs_base(knobs: list[dict]) -> dict | None:
    """The knobs race's arm of your settings: the one that turns no knob."""
    return next((r for r in knobs if not knob_keys(r["compare_setting"])), None)


def size_words(setting: dict) -> str:
    """A batch size as tune.md writes it: `64`, or with a fixed effective batch `64 × 4` (its accumulation)."""
    accumulate = setting.get(tuning.ACCUMULATE)
    return f"{setting['batch_size']}" + (f" × {accumulate}" if accumulate is not None else "")


def sizes_words(sizes, start: dict) -> str:
    """Batch sizes as tune.md lists them: `32, 64`, or with a fixed effective batch (your settings' accumulation
    in `start`) each with the accumulation that makes it: `32 × 8, 64 × 4`."""
    if tuning.ACCUMULATE not in start:
        return ", ".join(map(str, sizes))
    share = tuning.samples(start)
    return ", ".join(size_words({"batch_size": b, tuning.ACCUMULATE: share // b}) for b in sizes)


def analyse(one: dict) -> dict:
    """What a tune found, from its stages' results (as far as it got): the edge, the batch race's leader and
    the sizes as fast, and the rows of "what matters", each with an interval that holds together with the
    others' (Bonferroni over the rows)."""
    objective = _objective(one)
    stages = one["stages"]
    start = _start(one)
    out: dict = {"objective": objective, "rows": [], "summary": one["summary"], "start": start,
                 "busy": [s for s in tuning.STAGES if _busy(*stages.get(s, []))]}
    edge = stages.get("edge", [{}])[0]
    out["edge"], out["edge_stop"] = edge.get("max_batch_size"), edge.get("find_max_stop")
    out["edge_searched"] = bool(edge.get("find_max_trials"))
    pending = []  # (what, kind, race, arm, against)
    knobs = tuning.measured(stages.get("knobs") or [], objective)
    base = _knobs_base(knobs)
    for r in stages.get("knobs") or []:
        if r is base:
            continue
        changed = knob_keys(r["compare_setting"])
        at = size_words(r["compare_setting"])
        what, kind = f"{named(changed)} (at your batch size, {at})", "knob"
        if tuning.REPLAY in changed:  # the ceiling arm: what waiting for data costs, not a setting to change
            what, kind = (f"no wait for data: your loader's batches replayed from the device (at your batch size, "
                          f"{at})", PIPELINE)
        if r not in knobs or base is None:
            out["rows"].append({"what": what, "kind": kind, "ratio": None, "ci_low": None, "ci_high": None,
                                "reason": f"{r.get('status')}: {r.get('error', '')}", "busy": _busy(r)})
            continue
        pending.append((what, kind, knobs, r, base))
    race = tuning.measured(stages.get("near") or stages.get("batch") or [], objective)
    if race:
        rates = [tuning.values(r, objective) for r in race]
        lead = race[tuning.fastest(rates)]
        sizes = [r["batch_size"] for r in race]
        knobs_on = knob_keys(lead["compare_setting"])
        with_knobs = f" (with {named(knobs_on)})" if knobs_on else ""
        out["leader"], out["lead_result"], out["knobs_on"] = lead["batch_size"], lead, knobs_on
        out["race_sizes"] = sorted(sizes)
        powers = [b for b in sizes if is_power_of_two(b)]
        if powers:
            nearest = min(powers, key=lambda b: (abs(b - lead["batch_size"]), b))
            out["power_of_two"] = nearest
            if nearest != lead["batch_size"]:
                pending.append((f"power of two: {nearest}, the nearest, against the fastest {lead['batch_size']}"
                                f"{with_knobs}", "power of two", race, race[sizes.index(nearest)], lead))
            else:
                others = [r for r in race if not is_power_of_two(r["batch_size"])]
                if others:
                    other = others[tuning.fastest([tuning.values(r, objective) for r in others])]
                    pending.append((f"power of two: the fastest, {nearest}, is one; the fastest other "
                                    f"({other['batch_size']}) against it{with_knobs}", "power of two", race, other, lead))
        start_bs = start.get("batch_size")
        if start_bs in sizes and start_bs != lead["batch_size"]:
            what = "micro-batch × accumulation" if tuning.ACCUMULATE in start else "batch size"
            pending.append((f"{what}: {size_words(lead['compare_setting'])} against your "
                            f"{size_words(race[sizes.index(start_bs)]['compare_setting'])}{with_knobs}", "batch size",
                            race, lead, race[sizes.index(start_bs)]))
    level = simultaneous(tuning.CONFIDENCE, len(pending))
    for what, kind, arms, arm, against in pending:
        table = Race([tuning.values(r, objective) for r in arms])
        c = table.compare(arms.index(arm), arms.index(against), level)
        out["rows"].append({"what": what, "kind": kind, **c, "busy": _busy(arm, against)})
    out["level"], out["comparisons"] = level, len(pending)
    out["rows"] = ranked(out["rows"])
    if race:  # at the table's confidence, so that "measurably slower" below says what its row says
        lead = race.index(out["lead_result"])
        same = tuning.indistinguishable([tuning.values(r, objective) for r in race], lead, level)
        out["indistinguishable"] = sorted(race[i]["batch_size"] for i in same)
    return out


PIPELINE = "input pipeline"  # the kind of the ceiling arm's row
NEAR_THE_EDGE = 0.9  # a setting that peaks above this share of the device's memory is said to be close to its edge


def _geomean(rounds: list[float]) -> float | None:
    return math.exp(tuning.mean_log(rounds)) if rounds else None


def _gib(mib: float) -> str:
    return f"{mib / 1024:.1f} GiB"


def memory_words(a: dict, one: dict) -> str | None:
    """The advised setting's peak device memory and the fastest batch sizes', with the share of the device's
    memory each takes (a setting near the edge is one to know about); None where nothing was measured."""
    summary = a["summary"]
    results = [r for stage in ("confirm", "near", "batch", "knobs") for r in one["stages"].get(stage, [])
               if r.get("status") == "ok"]
    if not results:
        return None
    if all(r.get("peak_memory_mib") is None for r in results):
        return "not measured (peak device memory is CUDA's to count, and this tune ran on no CUDA device)"
    total = next((r["device_memory_gib"] * 1024 for r in results if r.get("device_memory_gib")), None)

    def peak(r: dict) -> str:
        return _gib(r["peak_memory_mib"]) + (f" ({r['peak_memory_mib'] / total:.0%})" if total else "")

    said = [f"of the device's {_gib(total)}"] if total else []
    if summary is not None:
        advised = {**summary["tune_start"], **summary["tune_best"]}
        found = next((r for r in results if r.get("peak_memory_mib") is not None
                      and tuning.same({**summary["tune_start"], **r["compare_setting"]}, advised)), None)
        if found is not None:
            what = "the advised setting" if summary["tune_decision"] == tuning.CHANGE else "your settings"
            said.append(f"{what} peaked at {peak(found)}")
            if total and found["peak_memory_mib"] / total > NEAR_THE_EDGE:
                said[-1] += (": close to the device's edge, where a larger input, a longer sequence or another "
                             "process on the device may not fit beside it")
    race = {r["batch_size"]: r for r in tuning.measured(one["stages"].get("near") or one["stages"].get("batch")
                                                         or [], a["objective"])}
    fastest = [race[b] for b in a.get("indistinguishable") or [] if race[b].get("peak_memory_mib") is not None]
    if fastest:
        said.append("the fastest batch sizes: " + ", ".join(f"{r['batch_size']}: {peak(r)}" for r in fastest))
    return (said[0] + ": " + "; ".join(said[1:]) if total and len(said) > 1 else "; ".join(said)) or None


def step_words(a: dict, one: dict) -> str | None:
    """With a fixed effective batch: the time per optimizer step (its samples over samples/s, all devices') of
    the advice and of your settings, as measured in the race the advice rests on; None otherwise."""
    summary, start = a["summary"], a["start"]
    effective = (summary or {}).get("tune_effective_batch")
    if not effective or a["objective"] != "time":
        return None
    said = []
    race = tuning.measured(one["stages"].get(summary.get("tune_basis") or "") or [], "time")
    yours = next((r for r in race if tuning.same(r["compare_setting"], start)), None)
    if summary["tune_decision"] == tuning.CHANGE and summary.get("tune_best_samples_per_s"):
        said.append(f"{effective / summary['tune_best_samples_per_s']:.3g} s with the advice "
                    f"({size_words(summary['tune_best'])})")
    if yours is not None:
        said.append(f"{effective / _geomean(tuning.values(yours, 'time')):.3g} s with yours ({size_words(start)})")
    return f"tune.effective_batch={effective} samples each: " + ", ".join(said) if said else None


def compile_words(one: dict, objective: str) -> str | None:
    """torch.compile's cost beside its steady-state effect (its row in "what matters"): the time its first step
    took beyond the uncompiled one's, and the training steps after which the compiled run has saved more than
    that (steady-state step times, from the knobs race's rates); None where compile was not raced."""
    knobs = tuning.measured(one["stages"].get("knobs") or [], objective)
    base = _knobs_base(knobs)
    compiled = next((r for r in knobs if knob_keys(r["compare_setting"]) == {"compile": True}), None)
    if base is None or compiled is None or objective != "time":
        return None
    first = [r.get("first_step_time_s") for r in (compiled, base)]
    if None in first:
        return None
    cost = max(0.0, first[0] - first[1])
    batch = tuning.samples(compiled["compare_setting"])  # an optimizer step's, with its accumulation
    step = {id(r): batch / _geomean(tuning.values(r, objective)) for r in (compiled, base)}
    saved = step[id(base)] - step[id(compiled)]
    took = f"its first step took {cost:.1f} s more than the uncompiled one's (compiling)"
    if saved <= 0:
        return f"{took}, and its steady-state steps are no faster: it never pays back here"
    steps = math.ceil(cost / saved)
    return (f"{took}; each steady-state step saves {saved * 1000:.3g} ms, so it pays back after about {steps:,} "
            f"training steps ({steps * step[id(base)] / 60:.1f} min at your settings' rate)")


def pipeline_words(row: dict) -> str:
    """What the input pipeline costs, from the ceiling arm's row: the share of the training time the steps
    spend waiting for data (1 - yours / the ceiling's rate), with its interval, or that none was shown."""
    def share(ratio: float) -> str:
        return f"{ratio / (1 + ratio):.0%}"

    if row.get("ratio") is None:
        return f"not measured ({row.get('reason') or 'the budget ended before it'})"
    replayed = f"your loader's batches replayed from the device, the same steps were {reading(row)}"
    if resolved(row) and row["ci_low"] > 0:
        return (f"your input pipeline costs about {share(row['ratio'])} of the training time ({share(row['ci_low'])} "
                f"to {share(row['ci_high'])}): {replayed}; the loader's settings are among the knobs below")
    return f"no measurable cost ({replayed})"


def ranked(rows: list[dict]) -> list[dict]:
    """What matters, by evidence: the effects whose interval excludes zero first, by the smallest effect their
    interval supports (its end nearer zero); then those not resolved, the best resolved first; then those
    not measured. No estimate of an unresolved effect ranks it above a clear one."""
    def key(row):
        if resolved(row):
            supported = row["ci_low"] if row["ci_low"] > 0 else -row["ci_high"]
            return (0, -abs(supported))
        if row.get("ratio") is not None:
            return (1, row["detectable"] if row.get("detectable") is not None else float("inf"))
        return (2, 0)

    return sorted(rows, key=key)


def reading(c: dict) -> str:
    """A row's reading: faster or slower by how much (at least), no detectable difference, or not resolved."""
    if c.get("ratio") is None:
        return c.get("reason") or "not measured"
    if c.get("ci_low") is None:
        return "not resolved: one round, no interval"
    if resolved(c):
        faster = c["ci_low"] > 0
        word = "faster" if faster else "slower"
        if readable(c):
            return f"{abs(c['ratio']):.1%} {word}"
        return f"{word}, by at least {abs(c['ci_low'] if faster else c['ci_high']):.1%}"
    if c.get("detectable") is not None and c["detectable"] > tuning.RESOLVES:
        return "not resolved: too few or too noisy rounds to show even a twofold difference"
    shown = f"±{c['detectable']:.1%}" if c.get("detectable") is not None else "a larger difference"
    if readable(c):
        return f"no detectable difference ({shown} would have shown)"
    return f"not resolved: only a difference beyond {shown} would have shown"


def _row_cells(c: dict) -> tuple[str, str]:
    """The difference and interval cells: none for an effect not resolved and too wide to read."""
    if c.get("ratio") is None or c.get("ci_low") is None:
        return "", ""
    interval = f"{_pct(c['ci_low'])} to {_pct(c['ci_high'])}"
    if readable(c):
        return _pct(c["ratio"]), interval
    return ("", "not resolved") if not resolved(c) else ("", interval)


def headline(summary: dict, objective: str, as_fast: list[int] | None = None) -> list[str]:
    """The advice in one paragraph: change (what, by how much, its interval; `as_fast`: the batch sizes as fast
    as the one advised, within the noise) or keep (and what would have shown)."""
    unit = "samples/s" if objective == "time" else "images per joule"
    speedup = summary.get("tune_speedup") or {}
    rate, (low, high) = summary.get("tune_best_samples_per_s"), (summary.get("tune_best_ci") or [None, None])[:2]
    shown = low is not None and readable({"ci_low": low / rate - 1, "ci_high": high / rate - 1}) if rate else False
    measured = f"{rate:,.4g} {unit}" + (f" ({low:,.4g} to {high:,.4g})" if shown else "") if rate else ""
    if summary["tune_decision"] == tuning.CHANGE:
        change = named(summary["tune_best"])
        if speedup.get("ci_low") is not None:
            family = speedup.get("comparisons") or 1
            held = "95%" + (f", simultaneous over {family} comparisons" if family > 1 else "")
            ties = [b for b in as_fast or [] if b != summary["tune_best"]["batch_size"]]
            sizes = "Micro-batches" if tuning.ACCUMULATE in summary["tune_start"] else "Batch sizes"
            tied = (f" {sizes} as fast within the noise: {sizes_words(sorted(as_fast), summary['tune_start'])}; any of "
                    "them will do." if ties and summary["tune_best"]["batch_size"] != summary["tune_start"]["batch_size"]
                    else "")
            return [f"**Change: {change}: {_pct(speedup['ratio'])} ({_pct(speedup['ci_low'])} to "
                    f"{_pct(speedup['ci_high'])}, {held}) against your settings**" + (f", {measured}." if measured else ".")
                    + tied, "", _basis(summary)]
        return [f"**Change: {change}** ({speedup.get('reason') or 'not compared with your settings'})"
                + (f": {measured}." if measured else ".")]
    resolution = summary.get("tune_resolution") or {}
    if resolution.get("detectable") is None:
        return [f"**Keep your settings: {speedup.get('reason') or 'nothing was measured against them'}.** The budget "
                f"(budget_min={_budget(summary)}) ended before the tune compared anything with them: it needs a few "
                "minutes for its stages (budget_min=3 or more)."]
    if resolution["detectable"] > tuning.RESOLVES:
        return [f"**Keep your settings: nothing measured was clearly faster, and this tune could not have shown "
                "it:** its rounds were too few or too noisy to resolve even a twofold difference. Give it more time "
                f"(budget_min={resolution['budget_min']:g}) on a quiet machine.", "", _basis(summary)]
    return [f"**Keep your settings: nothing measured was clearly faster.** Differences larger than about "
            f"±{resolution['detectable']:.1%} would have shown (budget_min={resolution['budget_min']:g} would resolve "
            f"about ±{resolution['detectable_then']:.1%})" + (f"; yours ran at {measured}." if measured else "."),
            "", _basis(summary)]


def _basis(summary: dict) -> str:
    stage = summary.get("tune_basis")
    if stage == "confirm":
        return ("Decided on the confirm's own rounds: your settings against the best found, measured afresh, so that "
                "a choice the earlier stages made on noise is not carried into the advice.")
    why = summary.get("tune_basis_reason") or "the confirm did not decide it"
    return (f"Decided on the {stage} race ({why}): each arm of it against your settings, the intervals simultaneous "
            "over all of them.")


def _budget(summary: dict):
    return (summary.get("config") or {}).get("budget_min")


def markdown(one: dict) -> str:
    a = analyse(one)
    summary = a["summary"]
    unit = "samples/s" if a["objective"] == "time" else "images per joule"
    lines = ["# What trains fastest here, and what matters" if a["objective"] == "time"
             else "# What trains on the least energy here, and what matters", ""]
    lines += ["Found by `mode=tune` in paired rounds in one process, the noise of each race pooled over all its arms "
              "(see docs/modes/tune.md in bsbench's repository).", ""]
    if summary is None:
        done = [s for s in tuning.STAGES if s in one["stages"]]
        lines += [f"This tune did not finish: stages done: {', '.join(done) or 'none'}; resume it with "
                  "resume=<its folder> and the same command.", ""]
    else:
        lines += headline(summary, a["objective"], a.get("indistinguishable")) + [""]
    if a["busy"]:
        lines += [f"- *{BUSY}*: the {', '.join(a['busy'])} {'stage was' if len(a['busy']) == 1 else 'stages were'} "
                  "measured while other processes took the machine's CPU cores or its GPU (summary.md names them): "
                  "the intervals are wider than this machine gives when quiet; measure again on a quiet machine "
                  "before trusting small effects."]
    if a["edge"] is not None:
        lines.append(f"- Memory edge: {a['edge']} ({tuning.edge_words(a['edge_stop'], a['edge_searched'])}).")
    for row in a["rows"]:
        if row["kind"] == PIPELINE:
            lines.append(f"- Input pipeline: {pipeline_words(row)}.")
    step = step_words(a, one)
    if step:
        lines.append(f"- Optimizer step: {step}.")
    memory = memory_words(a, one)
    if memory:
        lines.append(f"- Memory: {memory}.")
    scaled = scaling_words((summary or {}).get("tune_scaling"))
    if scaled:
        lines.append(f"- Scaling: {scaled}.")
    compiled = compile_words(one, a["objective"])
    if compiled:
        lines.append(f"- torch.compile (ranked below by its steady-state effect): {compiled}.")
    if summary is not None:
        if "_target_" in ((summary.get("config") or {}).get("model") or {}):
            lines.append("- Fused Adam: not tried, since your module's configure_optimizers builds its optimizer "
                         "(try torch.optim.Adam(..., fused=True) there).")
        if summary.get("tune_skipped"):
            lines.append(f"- Not run, the budget spent before them: {', '.join(summary['tune_skipped'])}; "
                         "resume=<this folder> with a larger budget_min runs them.")
        for stage in ("batch", "near"):
            left = next((r.get("tune_not_measured") for r in one["stages"].get(stage) or []), None)
            sizes = sorted({s["batch_size"] for s in left or [] if isinstance(s, dict) and "batch_size" in s})
            if sizes:
                lines.append(f"- Left out of the {stage} race, too slow to measure in its share of the budget: "
                             f"{sizes_words(sizes, a['start'])} (a larger budget_min measures them).")
        lines.append(f"- Time: {summary.get('tune_elapsed_s', 0) / 60:.1f} min of budget_min={_budget(summary)}.")
    lines.append("")
    if a["rows"]:
        held = f"95% intervals, simultaneous over the {a['comparisons']} comparisons" if a["comparisons"] > 1 else \
            "95% interval"
        lines += ["## What matters", "",
                  f"Each effect on {unit} ({held}): those the intervals show first, by the smallest effect each "
                  "supports; then those not resolved, with the smallest difference the rounds could have shown.", "",
                  "| rank | what | difference | interval | reading |", "| --- | --- | --- | --- | --- |"]
        for i, row in enumerate(a["rows"], 1):
            difference, interval = _row_cells(row)
            marked = f"{reading(row)} ({BUSY})" if row.get("busy") else reading(row)
            lines.append(f"| {i} | {row['what']} | {difference} | {interval} | {marked} |")
        lines.append("")
    if "leader" in a:
        same, start = a["indistinguishable"], a["start"]
        if tuning.ACCUMULATE in start:
            lines.append(f"Micro-batches (× the accumulation that makes {tuning.samples(start)} per device and step) that "
                         f"cannot be told apart from the fastest ({sizes_words([a['leader']], start)}), of those raced "
                         f"({sizes_words(a['race_sizes'], start)}): {sizes_words(same, start)}.")
        else:
            lines.append(f"Batch sizes that cannot be told apart from the fastest ({a['leader']}), of those raced near "
                         f"it ({', '.join(map(str, a['race_sizes']))}): {', '.join(map(str, same))}.")
        p = a.get("power_of_two")
        if p is None:
            lines.append("No power of two was raced near the fastest batch size.")
        elif p == a["leader"]:
            lines.append(f"The fastest batch size, {p}, is a power of two.")
        elif p in same:
            lines.append(f"The nearest power of two, {p}, is among them: a power of two is as fast here, not faster.")
        else:
            lines.append(f"The nearest power of two, {p}, is not among them: it is measurably slower than "
                         f"{a['leader']} here.")
        lines.append("")
    if summary is not None:
        if summary["tune_decision"] == tuning.CHANGE:
            lines += ["## To use it", "", "```python", *snippet(summary), "```", ""]
        else:
            lines += ["## To use it", "", "Nothing to change: no setting measured was clearly faster than yours. To "
                      f"measure yours again: `python -m bsbench mode=throughput {_flags(summary, summary['tune_start'])}`.",
                      ""]
    return "\n".join(lines)


def _flags(summary: dict, setting: dict) -> str:
    config = summary.get("config") or {}
    own_module = "_target_" in (config.get("model") or {})
    start = summary["tune_start"]
    keys = ["batch_size", *(k for k in [tuning.ACCUMULATE] if k in start), "precision", "channels_last",
            *([] if own_module else ["model.fused_adam"]), "compile", *(k for k in tuning.LOADER if k in start),
            *(k for k in tuning.DDP_KNOBS if k in start)]
    devices, nodes = _devices(summary), _nodes(summary)
    return (f"devices={devices} " if devices > 1 else "") + (f"trainer.num_nodes={nodes} " if nodes > 1 else "") + \
        " ".join(f"{k}={text(setting.get(k, start.get(k, False)))}" for k in keys)


def _count(value) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 1


def _devices(summary: dict) -> int:
    """The devices the tune trained on (each node's, as devices= counts them)."""
    return _count((summary.get("config") or {}).get("devices"))


def _nodes(summary: dict) -> int:
    return _count(((summary.get("config") or {}).get("trainer") or {}).get("num_nodes"))


def snippet(summary: dict) -> list[str]:
    """The Lightning arguments and batch size of the recommended setting, to paste."""
    best = {**summary["tune_start"], **summary["tune_best"]}
    config = summary.get("config") or {}
    # DDP's settings where the advice sets them (torch's defaults are false and null), as DDPStrategy takes them
    ddp = ", ".join(f"{k.split('.', 1)[1]}={best[k]!r}" for k in tuning.DDP_KNOBS if best.get(k) not in (None, False))
    lines = [f"# bsbench mode=tune on {summary.get('device_name')}: "
             f"{named(changes(best, summary['tune_start']))}",
             "import lightning as L", "import torch",
             *(["from lightning.pytorch.strategies import DDPStrategy"] if ddp else []), "",
             f"trainer = L.Trainer(accelerator={config.get('accelerator', 'auto')!r}, devices={_devices(summary)}, "
             + (f"num_nodes={_nodes(summary)}, " if _nodes(summary) > 1 else "") +
             f"precision={best.get('precision')!r}" + (f", accumulate_grad_batches={best[tuning.ACCUMULATE]}"
                                                      if tuning.ACCUMULATE in best else "")
             + (f", strategy=DDPStrategy({ddp})" if ddp else "") + ")",
             f"batch_size = {best['batch_size']}  # your DataLoader's" + (
                 f": {tuning.samples(best)} samples per optimizer step with the accumulation"
                 + (" on each device" if _devices(summary) * _nodes(summary) > 1 else "") + ", as before"
                 if tuning.ACCUMULATE in best else "")]
    if best.get("channels_last"):
        lines.append("model = model.to(memory_format=torch.channels_last)  # and each input: "
                     "x = x.to(memory_format=torch.channels_last)")
    if "_target_" not in (config.get("model") or {}):  # a module of the user's builds its own optimizer
        lr = (config.get("model") or {}).get("lr")
        lines.append(f"optimizer = torch.optim.Adam(model.parameters(), lr={lr}"
                     f"{', fused=True' if best.get('model.fused_adam') else ''})  # in configure_optimizers")
    if best.get("compile"):
        lines.append("model = torch.compile(model)")
    loader = {k.split(".", 1)[1]: best[k] for k in tuning.LOADER if k in best}
    if changes({k: best[k] for k in tuning.LOADER if k in best}, summary["tune_start"]):
        lines.append(f"loader = DataLoader(..., {', '.join(f'{k}={v!r}' for k, v in loader.items())})  "
                     "# your training DataLoader's (or your datamodule's arguments)")
    return lines + ["", f"# measure it again: python -m bsbench mode=throughput {_flags(summary, best)}"]


def figure(one: dict):
    """samples/s (or images per joule) against batch size, each with its 95% interval over its rounds (cut,
    with an arrow and its end written, where it would stretch the axis beyond the measured points): the
    grid's race on the left (log scale), the race near the fastest on the right; the recommended batch size
    starred only where the advice is to change, yours marked, the powers of two and busy races ringed."""
    a = analyse(one)
    stages = [s for s in ("batch", "near") if tuning.measured(one["stages"].get(s) or [], a["objective"])]
    summary = a["summary"]
    star = summary["tune_best"]["batch_size"] if summary and summary["tune_decision"] == tuning.CHANGE else None
    fig = Figure(figsize=(11, 5), dpi=100, layout="constrained")
    axes = fig.subplots(1, len(stages), squeeze=False)[0]
    for ax, stage in zip(axes, stages):
        arms = tuning.measured(one["stages"][stage], a["objective"])
        points = {r["batch_size"]: tuning.values(r, a["objective"]) for r in arms}
        points_setting = {r["batch_size"]: r["compare_setting"] for r in arms}
        busy = {r["batch_size"] for r in arms if r.get("busy") is True}
        sizes = sorted(points)
        # near the fastest, sizes a few apart: evenly spaced, each labelled (the grid halves: a log axis)
        at = {b: (i if stage == "near" else b) for i, b in enumerate(sizes)}
        stats = [describe(points[b], log=True) for b in sizes]
        means = [s["mean"] for s in stats]
        below = [s["mean"] - s["ci_low"] if s["ci_low"] is not None else 0 for s in stats]
        above = [s["ci_high"] - s["mean"] if s["ci_high"] is not None else 0 for s in stats]
        top = axis_top(means, [m + h for m, h in zip(means, above)])
        interval_bars(ax, [at[b] for b in sizes], means, below, above, top, fmt="o", ms=5, capsize=3, zorder=3,
                      label="batch size (95% interval over its rounds)")
        # the marks behind the points they mark (zorder): a ring, a star, never over a point
        powers = [b for b in sizes if is_power_of_two(b)]
        if powers:
            ax.plot([at[b] for b in powers], [means[sizes.index(b)] for b in powers], "o", ms=12, mfc="none",
                    mec="crimson", mew=1.5, label="power of two", zorder=2)
        if busy:
            ax.plot([at[b] for b in sorted(busy)], [means[sizes.index(b)] for b in sorted(busy)], ls="none",
                    marker="o", ms=16, mfc="none", mec="black", mew=1.1, zorder=4, gid=BUSY,
                    label="measured on a busy machine")
        if star in points:
            ax.plot([at[star]], [means[sizes.index(star)]], "*", ms=18, color="gold", mec="black",
                    label=f"recommended: {star}", zorder=1)
        yours = a["start"].get("batch_size")
        if yours in points:
            ax.plot([at[yours]], [means[sizes.index(yours)]], "s", ms=13, mfc="none", mec="tab:green", mew=1.5,
                    label=f"your batch size: {yours}", zorder=2)
        if stage == "batch" and len(sizes) > 1 and sizes[-1] / sizes[0] > 4:
            ax.set_xscale("log", base=2)
            ax.minorticks_off()
        ax.set_xticks([at[b] for b in sizes], [size_words(points_setting[b]) for b in sizes], rotation=45, fontsize=8)
        if stage == "near":
            ax.set_xlim(-0.5, len(sizes) - 0.5)
        ax.set_xlabel("micro-batch × accumulation (per device)" if tuning.ACCUMULATE in a["start"]
                      else "batch size (per device)")
        ax.set_ylabel("training samples/s" if a["objective"] == "time" else "images per joule")
        ax.set_ylim(0, top)
        kept = tuning.ACCUMULATE in a["start"]
        ax.set_title((f"the ways to make {tuning.samples(a['start'])} per device and step" if kept else
                      "the grid below the memory edge") if stage == "batch" else
                     ("the fastest raced again" if kept else "near the grid's fastest"), fontsize=10)
        ax.grid(alpha=0.3)
    drawn = {}  # each entry once, for what either panel draws
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            drawn.setdefault(label, handle)
    fig.legend(list(drawn.values()), list(drawn), loc="outside lower center", ncols=3, fontsize=8)
    knobs = named(a.get("knobs_on") or {})
    fig.suptitle("mode=tune: batch sizes raced " + (f"with {knobs}" if knobs else "at your starting settings")
                 + (" (no change recommended)" if summary and star is None else ""), fontsize=11)
    return fig


def write_tune(results: list[dict], out: Path) -> tuple[str, list[Path]]:
    """tune.md and tune.png (one per tune: tune-<id>.png where a report holds several) in `out`."""
    found = tunes(results)
    if not found:
        return "", []
    texts, written = [], []
    for i, one in enumerate(found.values()):
        texts.append(markdown(one))
        name = "tune.png" if len(found) == 1 else f"tune-{i + 1}.png"
        if any(tuning.measured(one["stages"].get(s) or [], _objective(one)) for s in ("batch", "near")):
            save_png(figure(one), out / name, "bsbench: mode=tune")
            written.append(out / name)
    text = "\n".join(texts)
    write_atomic(out / "tune.md", text)
    return text, [out / "tune.md", *written]
