"""mode=tune's part of the report, from its results alone (bsbench.modes.tune describes the stages):
tune.md (the fastest setting found, what matters ranked with intervals, the batch sizes that cannot
be told apart from the fastest, a snippet to paste) and tune.png (samples/s against batch size)."""

from pathlib import Path

from matplotlib.figure import Figure

from bsbench.core.results import write_atomic
from bsbench.modes import tune
from bsbench.report.plots import save_png
from bsbench.report.stats import describe, paired


def _pct(x) -> str:
    return "" if x is None else f"{x:+.1%}"


def _interval(c: dict) -> str:
    return f"{_pct(c['ci_low'])} to {_pct(c['ci_high'])}" if c.get("ci_low") is not None else "no interval yet"


def _words(c: dict) -> str:
    if c.get("ratio") is None:
        return c.get("reason") or "not measured"
    if c.get("ci_low") is None:
        return f"{c['ratio']:+.1%} (too few rounds for an interval)"
    if c["ci_low"] <= 0 <= c["ci_high"]:
        return "no detectable difference"
    return f"{abs(c['ratio']):.1%} {'faster' if c['ratio'] > 0 else 'slower'}"


def _text(value) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _numbers(values, positive: bool = False) -> bool:
    return isinstance(values, list) and all(_number(v) and (v > 0 or not positive) for v in values)


def _usable(r: dict) -> bool:
    """A tune's result whose fields are what this report computes with (a results.json may hold anything:
    one that is not is left out, as the summary table leaves out an unreadable file)."""
    if r.get("tune_stage") == "edge":
        return isinstance(r.get("max_batch_size"), int)
    if r.get("tune_stage") in tune.STAGES:
        return (isinstance(r.get("compare_setting"), dict) and isinstance(r.get("batch_size"), int)
                and _numbers(r.get("round_samples_per_s") or [], positive=True)
                and _numbers(r.get("round_joules_per_sample") or [], positive=True))
    speedup, best, start = r.get("tune_speedup"), r.get("tune_best"), r.get("tune_start")
    return (isinstance(best, dict) and isinstance(best.get("batch_size"), int) and isinstance(speedup, dict)
            and all(speedup.get(k) is None or _number(speedup[k]) for k in ("ratio", "ci_low", "ci_high"))
            and (start is None or isinstance(start, dict))
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
        if r.get("tune_stage") in tune.STAGES:
            one["stages"].setdefault(r["tune_stage"], []).append(r)
        elif r.get("status") == "ok":
            one["summary"] = r
    return {k: v for k, v in found.items() if v["stages"]}


def _objective(one: dict) -> str:
    for results in one["stages"].values():
        for r in results:
            objective = ((r.get("config") or {}).get("tune") or {}).get("objective")
            if objective in tune.OBJECTIVES:
                return objective
    return "time"


def _measured(results: list[dict], objective: str) -> list[dict]:
    return [r for r in results if r.get("status") == "ok" and tune.values(r, objective)]


def _compare(a: dict, b: dict, objective: str) -> dict:
    return paired(tune.values(a, objective), tune.values(b, objective))


def analyse(one: dict) -> dict:
    """What a tune found, from its stages' results (as far as it got)."""
    objective = _objective(one)
    stages = one["stages"]
    out: dict = {"objective": objective, "rows": [], "summary": one["summary"]}
    edge = stages.get("edge", [{}])[0]
    out["edge"], out["edge_stop"] = edge.get("max_batch_size"), edge.get("find_max_stop")
    race = _measured(stages.get("near") or stages.get("batch") or [], objective)
    if not race:
        return out
    lead = race[tune.fastest([tune.values(r, objective) for r in race])]
    sizes = [r["batch_size"] for r in race]
    start = (one["summary"] or {}).get("tune_start") or race[0].get("tune_start") or {}
    out["leader"], out["lead_result"] = lead["batch_size"], lead
    same = tune.indistinguishable([tune.values(r, objective) for r in race], race.index(lead))
    out["indistinguishable"] = sorted(race[i]["batch_size"] for i in same)
    out["race_sizes"] = sorted(sizes)
    powers = [b for b in sizes if tune.is_power_of_two(b)]
    if powers:
        nearest = min(powers, key=lambda b: (abs(b - lead["batch_size"]), b))
        if nearest != lead["batch_size"]:
            c = _compare(race[sizes.index(nearest)], lead, objective)
            out["power_of_two"] = nearest
            out["rows"].append({"what": f"power of two: {nearest}, the nearest, against the fastest {lead['batch_size']}",
                                "kind": "power of two", **c})
        else:
            others = [r for r in race if not tune.is_power_of_two(r["batch_size"])]
            out["power_of_two"] = nearest
            if others:
                best_other = others[tune.fastest([tune.values(r, objective) for r in others])]
                c = _compare(best_other, lead, objective)
                out["rows"].append({"what": f"power of two: the fastest, {nearest}, is one; the fastest other "
                                            f"({best_other['batch_size']}) against it", "kind": "power of two", **c})
    start_bs = start.get("batch_size")
    if start_bs in sizes and start_bs != lead["batch_size"]:
        c = _compare(lead, race[sizes.index(start_bs)], objective)
        out["rows"].append({"what": f"batch size: {lead['batch_size']} against your {start_bs}", "kind": "batch size", **c})
    knobs = stages.get("knobs") or []
    base = next((r for r in knobs if tune.values(r, objective) and set(r["compare_setting"]) == {"batch_size"}), None)
    for r in knobs:
        if r is base or not isinstance(r.get("compare_setting"), dict):
            continue
        changed = {k: v for k, v in r["compare_setting"].items() if k != "batch_size"}
        what = " ".join(f"{k}={_text(v)}" for k, v in changed.items())
        if r.get("status") != "ok" or base is None or not tune.values(r, objective):
            out["rows"].append({"what": f"{what} (at {r['batch_size']})", "kind": "knob", "ratio": None,
                                "ci_low": None, "ci_high": None, "reason": f"{r.get('status')}: {r.get('error', '')}"})
            continue
        out["rows"].append({"what": f"{what} (at {r['batch_size']})", "kind": "knob", **_compare(r, base, objective)})
    out["rows"].sort(key=lambda row: -abs(row["ratio"]) if row.get("ratio") is not None else 1)
    return out


def markdown(one: dict) -> str:
    a = analyse(one)
    summary = a["summary"]
    unit = "samples/s" if a["objective"] == "time" else "images per joule"
    lines = ["# What trains fastest here, and what matters" if a["objective"] == "time"
             else "# What trains on the least energy here, and what matters", ""]
    lines.append("Found by `mode=tune` in paired rounds in one process; intervals are 95% (see docs/modes/tune.md "
                 "in bsbench's repository).")
    lines.append("")
    if summary is None:
        done = [s for s in tune.STAGES if s in one["stages"]]
        lines += [f"This tune did not finish: stages done: {', '.join(done) or 'none'}; resume it with "
                  "resume=<its folder> and the same command.", ""]
    else:
        best = summary["tune_best"]
        chosen = " ".join(f"{k}={_text(v)}" for k, v in best.items())
        low, high = (summary.get("tune_best_ci") or [None, None])[:2]
        rate = summary.get("tune_best_samples_per_s")
        speedup = summary.get("tune_speedup") or {}
        lines.append(f"- **Fastest setting found**: {chosen}" + (f", {rate:.4g} samples/s" if rate else "")
                     + (f" ({low:.4g} to {high:.4g})" if low is not None else "") + ".")
        if summary.get("tune_start") and all(summary["tune_start"].get(k) == v for k, v in best.items()):
            lines.append("- Your starting configuration is the fastest found.")
        elif speedup.get("ratio") is not None:
            lines.append(f"- **Against your starting configuration**: {_words(speedup)} ({_interval(speedup)}).")
        elif speedup.get("reason"):
            lines.append(f"- Against your starting configuration: not measured ({speedup['reason']}).")
        lines.append(f"- Memory edge: {a['edge']} (the search ended at: {a['edge_stop']}).")
        if "_target_" in ((summary.get("config") or {}).get("model") or {}):
            lines.append("- Fused Adam: not tried, since your module's configure_optimizers builds its optimizer "
                         "(try torch.optim.Adam(..., fused=True) there).")
        if summary.get("tune_skipped"):
            lines.append(f"- Not run, the budget spent before them: {', '.join(summary['tune_skipped'])}; "
                         "resume=<this folder> with a larger budget_min runs them.")
        lines.append(f"- Time: {summary.get('tune_elapsed_s', 0) / 60:.1f} min of budget_min="
                     f"{(summary.get('config') or {}).get('budget_min')}.")
    lines.append("")
    if a["rows"]:
        lines += ["## What matters", "", f"Each effect on {unit}, ranked by size.", "",
                  "| rank | what | difference | 95% interval | reading |", "| --- | --- | --- | --- | --- |"]
        for i, row in enumerate(a["rows"], 1):
            lines.append(f"| {i} | {row['what']} | {_pct(row.get('ratio'))} | "
                         f"{_interval(row) if row.get('ratio') is not None else ''} | {_words(row)} |")
        lines.append("")
    if "leader" in a:
        same = a["indistinguishable"]
        lines.append(f"Batch sizes that cannot be told apart from the fastest ({a['leader']}), of those raced near it "
                     f"({', '.join(map(str, a['race_sizes']))}): {', '.join(map(str, same))}.")
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
        lines += ["## To use it", "", "```python", *snippet(summary), "```", ""]
    return "\n".join(lines)


def snippet(summary: dict) -> list[str]:
    """The Lightning arguments and batch size of the fastest setting, to paste."""
    best = summary["tune_best"]
    config = summary.get("config") or {}
    precision = best.get("precision", config.get("precision"))
    channels_last = best.get("channels_last", config.get("channels_last"))
    fused = best.get("model.fused_adam", (config.get("model") or {}).get("fused_adam"))
    compiled = best.get("compile", config.get("compile"))
    lines = [f"# bsbench mode=tune on {summary.get('device_name')}: batch size {best['batch_size']}",
             "import lightning as L", "import torch", "",
             f"trainer = L.Trainer(accelerator={config.get('accelerator', 'auto')!r}, devices=1, "
             f"precision={precision!r})", f"batch_size = {best['batch_size']}  # your DataLoader's"]
    if channels_last:
        lines.append("model = model.to(memory_format=torch.channels_last)  # and each input: "
                     "x = x.to(memory_format=torch.channels_last)")
    own_module = "_target_" in (config.get("model") or {})
    if not own_module:  # a module of the user's builds its own optimizer
        lr = (config.get("model") or {}).get("lr")
        lines.append(f"optimizer = torch.optim.Adam(model.parameters(), lr={lr}{', fused=True' if fused else ''})"
                     "  # in configure_optimizers")
    if compiled:
        lines.append("model = torch.compile(model)")
    flags = f"batch_size={best['batch_size']} precision={precision} channels_last={_text(bool(channels_last))}"
    if not own_module:
        flags += f" model.fused_adam={_text(bool(fused))}"
    lines += ["", f"# measure it again: python -m bsbench mode=throughput {flags}" + (" compile=true" if compiled else "")]
    return lines


def figure(one: dict):
    """samples/s (or images per joule) against batch size, each with its 95% interval over its rounds:
    the grid's race on the left (log scale), the race near the fastest on the right; the fastest
    and the powers of two marked."""
    a = analyse(one)
    stages = [s for s in ("batch", "near") if _measured(one["stages"].get(s) or [], a["objective"])]
    fig = Figure(figsize=(11, 5), dpi=100, layout="constrained")
    axes = fig.subplots(1, len(stages), squeeze=False)[0]
    for ax, stage in zip(axes, stages):
        points = {r["batch_size"]: tune.values(r, a["objective"]) for r in _measured(one["stages"][stage], a["objective"])}
        sizes = sorted(points)
        # near the fastest, sizes a few apart: evenly spaced, each labelled (the grid halves: a log axis)
        at = {b: (i if stage == "near" else b) for i, b in enumerate(sizes)}
        stats = [describe(points[b], log=True) for b in sizes]
        means = [s["mean"] for s in stats]
        below = [s["mean"] - s["ci_low"] if s["ci_low"] is not None else 0 for s in stats]
        above = [s["ci_high"] - s["mean"] if s["ci_high"] is not None else 0 for s in stats]
        ax.errorbar([at[b] for b in sizes], means, yerr=[below, above], fmt="o", ms=5, capsize=3, zorder=3,
                    label="batch size (95% interval)")
        # the marks behind the points they mark (zorder): a ring, a star, never over a point
        powers = [b for b in sizes if tune.is_power_of_two(b)]
        if powers:
            ax.plot([at[b] for b in powers], [means[sizes.index(b)] for b in powers], "o", ms=12, mfc="none",
                    mec="crimson", mew=1.5, label="power of two", zorder=2)
        if a.get("leader") in points:
            ax.plot([at[a["leader"]]], [means[sizes.index(a["leader"])]], "*", ms=18, color="gold", mec="black",
                    label=f"fastest: {a['leader']}", zorder=1)
        if stage == "batch" and len(sizes) > 1 and sizes[-1] / sizes[0] > 4:
            ax.set_xscale("log", base=2)
            ax.minorticks_off()
        ax.set_xticks([at[b] for b in sizes], [str(b) for b in sizes], rotation=45, fontsize=8)
        if stage == "near":
            ax.set_xlim(-0.5, len(sizes) - 0.5)
        ax.set_xlabel("batch size (per device)")
        ax.set_ylabel("training samples/s" if a["objective"] == "time" else "images per joule")
        ax.set_ylim(0, max(m + h for m, h in zip(means, above)) * 1.1)
        ax.set_title("the grid below the memory edge" if stage == "batch" else "near the grid's fastest", fontsize=10)
        ax.grid(alpha=0.3)
    drawn = {}  # each entry once, for what either panel draws
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            drawn.setdefault(label, handle)
    fig.legend(list(drawn.values()), list(drawn), loc="outside lower center", ncols=3, fontsize=8)
    fig.suptitle("mode=tune: batch sizes raced at your starting settings (paired rounds in one process)", fontsize=11)
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
        if any(_measured(one["stages"].get(s) or [], _objective(one)) for s in ("batch", "near")):
            save_png(figure(one), out / name, "bsbench: mode=tune")
            written.append(out / name)
    text = "\n".join(texts)
    write_atomic(out / "tune.md", text)
    return text, [out / "tune.md", *written]
