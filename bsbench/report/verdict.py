"""The answer to the question bsbench exists for: is a power of two (or a multiple of 8) faster than
its neighbours in the sweep? Each such batch size is compared with the nearest smaller and larger
batch sizes of the same setting, on steady-state training throughput, with a 95% interval: paired
round by round where they were measured together (mode=compare: the noise pooled over every arm of
the run, bsbench.core.stats.Race), Welch's otherwise. An interval too wide to read is "not resolved"."""

from statistics import median

from bsbench.core.arms import against_first, arm_names, kind, neighbour_pairs
from bsbench.core.stopping import sentence
from bsbench.core.stats import Race, compare, paired, readable, resolved
from bsbench.report.summary import METHOD, plural

# what a comparison's samples/s is the rate of, by what its rows measure (bsbench.report.summary.measures)
WHAT_IS_TIMED = {"training": "training steps", "inference": "forward passes, `mode=inference`",
                 "profiled training": "traced training steps, `mode=profile`, the profiler's overhead included"}


def reading(c: dict) -> str:
    if c["ci_low"] is None:
        if c.get("paired"):
            return "one round: no interval (run more rounds, compare.rounds)"
        return "one run on a side: no interval (run the sweep with repeats=3 or more)"
    lo, hi = c["ci_low"], c["ci_high"]
    if not resolved(c) and not readable(c):
        shown = f"±{c['detectable']:.1%}" if c.get("detectable") is not None else "a larger difference"
        return f"not resolved: only a difference beyond {shown} would have shown"
    if lo <= 0.0 <= hi:
        return "no detectable difference at this precision"
    if lo > 0:
        return f"{c['ratio']:.1%} faster ({lo:.1%} to {hi:.1%})"
    return f"{-c['ratio']:.1%} slower ({-hi:.1%} to {-lo:.1%})"


def interval_cell(c: dict) -> str:
    """A comparison's interval as a table shows it: its ends, or "not resolved" where it holds zero and is too
    wide to read (the reading says what difference would have shown)."""
    if c.get("ci_low") is None:
        return ""
    if not resolved(c) and not readable(c):
        return "not resolved"
    return f"{_pct(c['ci_low'])} to {_pct(c['ci_high'])}"


def compare_rows(row: dict, other: dict, races: dict[str, tuple[Race, list[dict]]] | None = None) -> dict:
    """row's throughput against other's: paired over the rounds of the compare run that measured both, with
    the noise of every arm of that run (`races`: each compare run's Race and its rows, by compare_id);
    over several such runs, paired over all their rounds; else Welch's comparison of their runs."""
    ours, others = row.get("round_values") or {}, other.get("round_values") or {}
    shared = [cid for cid in ours if cid in others]
    if len(shared) == 1 and races and shared[0] in races:
        table, members = races[shared[0]]
        c = table.compare(next(i for i, r in enumerate(members) if r is row),
                          next(i for i, r in enumerate(members) if r is other))
        return {**c, "runs": f"{c['pairs']} rounds, paired", "paired": True}
    if shared:
        mine, theirs = [], []
        for cid in shared:
            n = min(len(ours[cid]), len(others[cid]))
            mine += ours[cid][:n]
            theirs += others[cid][:n]
        return {**paired(mine, theirs), "runs": f"{len(mine)} rounds, paired", "paired": True}
    mine, theirs = row["samples_per_s_values"], other["samples_per_s_values"]
    return {**compare(mine, theirs), "runs": f"{len(mine)} vs {len(theirs)}", "paired": False}


def races_of(rows: list[dict]) -> dict[str, tuple[Race, list[dict]]]:
    """Each compare run's rounds as one race (its rows, whatever their setting): the noise its intervals use."""
    members: dict[str, list[dict]] = {}
    for row in rows:
        for cid in row.get("round_values") or {}:
            members.setdefault(cid, []).append(row)
    return {cid: (Race([row["round_values"][cid] for row in found]), found) for cid, found in members.items()}


def comparisons(rows: list[dict]) -> list[dict]:
    """For every power of two and multiple of 8, its throughput against each neighbour in the sweep."""
    found = []
    groups: dict[str, dict[int, dict]] = {}
    for row in rows:
        if row["samples_per_s_values"]:
            groups.setdefault(row["_group"], {})[row["batch_size"]] = row
    races = races_of(rows)
    for by_size in groups.values():
        for b, n in neighbour_pairs(by_size):
            row = by_size[b]
            c = compare_rows(row, by_size[n], races)
            found.append({"setting": row["setting"], "model": row.get("model"), "measures": row.get("measures"),
                          "batch_size": b, "kind": kind(b), "against": n, **c, "reading": reading(c),
                          "busy": bool(row.get("busy_runs") or by_size[n].get("busy_runs"))})
    return found


def _pct(x: float | None) -> str:
    return "" if x is None else f"{x:+.1%}"


def setting_comparisons(results: list[dict]) -> list[dict]:
    """mode=compare over compare.settings: each setting against the run's first setting at the same
    batch size, paired over their rounds."""
    runs: dict[str, list[dict]] = {}
    for r in results:
        spec = (r.get("config") or {}).get("compare") or {}
        if (r.get("status") == "ok" and isinstance(r.get("compare_id"), str) and spec.get("settings")
                and isinstance(r.get("compare_setting"), dict) and isinstance(r.get("compare_settings"), list)
                and r["compare_setting"] in r["compare_settings"] and _rates(r.get("round_samples_per_s"))):
            runs.setdefault(r["compare_id"], []).append(r)
    found = []
    for arms in runs.values():
        arms.sort(key=lambda r: r["compare_settings"].index(r["compare_setting"]))
        settings = [r["compare_setting"] for r in arms]
        names = arm_names(settings)
        table = Race([r["round_samples_per_s"] for r in arms])
        joules = [r.get("round_joules_per_sample") if _rates(r.get("round_joules_per_sample")) else [] for r in arms]
        images_per_joule = Race([[1 / j for j in values] for values in joules])
        for i, base in against_first(settings):
            c = table.compare(i, base)
            energy = None  # images per joule, where NVML measured both (the inverse of joules per image)
            if joules[i] and joules[base]:
                energy = images_per_joule.compare(i, base)
            found.append({"setting": names[i], "against": names[base], "model": arms[i].get("model"),
                          "runs": f"{c['pairs']} rounds, paired", **c, "reading": reading(c), "energy": energy,
                          "busy": arms[i].get("busy") is True or arms[base].get("busy") is True})
    return found


def _rates(values) -> bool:
    return isinstance(values, list) and bool(values) and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 for v in values)


def settings_markdown(found: list[dict]) -> list[str]:
    """The settings' verdict: each one's throughput against the first's, in words and in a table."""
    lines = ["# Which setting is faster here?", "",
             "Each setting against the first one of its comparison at the same batch size, on steady-state training "
             "throughput, paired round by round in one process (95% interval of the mean log ratio).", ""]
    for c in found:
        energy = c.get("energy")
        spent = "" if energy is None else (f"; images per joule: {_in_words(energy).replace('faster', 'more')}"
                                           .replace("slower", "fewer"))
        lines.append(f"- {c['setting']}: {_in_words(c)} than {c['against']}{spent}.")
    lines += ["", "| setting | against | runs | difference in samples/s | 95% interval | reading |",
              "| --- | --- | --- | --- | --- | --- |"]
    for c in found:
        lines.append(f"| {c['setting']} | {c['against']} | {c['runs']} | {_pct(c['ratio'])} | {interval_cell(c)} | "
                     f"{_marked(c)} |")
    return lines + ["", *_busy_note(found)]


BUSY = "busy machine"


def _marked(c: dict) -> str:
    """A comparison's reading, marked where a run it compares was measured on a busy machine."""
    return f"{c['reading']} ({BUSY})" if c.get("busy") else c["reading"]


def _busy_note(found: list[dict]) -> list[str]:
    busy = sum(bool(c.get("busy")) for c in found)
    if not busy:
        return []
    which = ("This comparison uses" if len(found) == 1 else f"All {len(found)} comparisons use" if busy == len(found)
             else f"{busy} of these {len(found)} comparisons {'uses' if busy == 1 else 'use'}")
    return [f"*{BUSY}*: {which} runs measured while other processes took the machine's CPU cores or its GPU "
            "(summary.md names them); measure again on a quiet machine before trusting "
            f"{'it' if busy == 1 else 'them'}.", ""]


def _in_words(c: dict) -> str:
    """'94.6% faster (+80.2% to +110.0%)', 'no detectable difference (-0.4% to +0.3%)'."""
    if c["ci_low"] is None:
        return f"{c['ratio']:+.1%} (one round: no interval)"
    interval = f"{_pct(c['ci_low'])} to {_pct(c['ci_high'])}"
    if not resolved(c) and not readable(c):
        return reading(c)
    if c["ci_low"] <= 0.0 <= c["ci_high"]:
        return f"no detectable difference ({interval})"
    return f"{abs(c['ratio']):.1%} {'faster' if c['ratio'] > 0 else 'slower'} ({interval})"


def verdict_markdown(rows: list[dict], stops: list[dict] = (), results: list[dict] = ()) -> str:
    """The verdict; `stops`: what ended each measurement that adaptive stopping ran (a sweep's stop
    record, each compare run's), told under the table; `results`: the runs, for compared settings."""
    found = comparisons(rows)
    by_setting = setting_comparisons(list(results))
    lines = settings_markdown(by_setting) if by_setting else []
    lines += ["# Are powers of two (or multiples of 8) faster here?", ""]
    told = [f"{stop.get('label', '')}{sentence(stop, 'rounds' if stop.get('compare_id') else 'rounds of the sweep')}"
            for stop in stops]
    if not found and by_setting:
        return "\n".join(lines[:-2] + told + [""])
    if not found:
        return "\n".join(lines + [f"{scope(results)} holds no power of two or multiple of 8 with a neighbour to "
                                  "compare it with (sweep a range around one, e.g. `batch_size=range(500,516)`).",
                                  *told, ""])
    rates = " and ".join(sorted({WHAT_IS_TIMED[c["measures"] or "training"] for c in found}))
    lines += ["Each power of two and multiple of 8 against its nearest smaller and larger batch size of the same "
              f"setting, on steady-state samples/s of {rates}: how much faster it is, with a 95% interval (paired over "
              f"the rounds of a `mode=compare` run, Welch's t over separate runs; {METHOD}).", ""]
    models = list(dict.fromkeys(c["model"] for c in found))
    for model in models:  # several architectures (experiment=b3_models): a verdict for each
        ours = [c for c in found if c["model"] == model]
        if len(models) > 1:
            lines += [f"## {model}", ""]
        lines += _table(ours)
    if len(models) > 1:
        lines += ["## All architectures", "",
                  "| architecture | comparisons | faster | slower | no detectable difference |",
                  "| --- | --- | --- | --- | --- |"]
        for model in models:
            faster, slower, neither = _tally([c for c in found if c["model"] == model])
            lines.append(f"| {model} | {faster + slower + neither} | {faster} | {slower} | {neither} |")
        lines += ["", _counts(found)]
    detectable = [c["detectable"] for c in found if c["detectable"] is not None]
    if detectable:
        lines.append(f"{scope(results)} could have detected differences of about {median(detectable):.1%} or more "
                     "(median over the comparisons; 95% confidence, 80% power). More repeats (or rounds) detect smaller "
                     "ones.")
    lines += told
    return "\n".join(lines) + "\n"



def scope(results) -> str:
    """What the verdict speaks of: this run, this comparison (one compare run), or this sweep."""
    results = list(results)
    if len(results) == 1:
        return "This run"
    compared = {r.get("compare_id") for r in results}
    if len(compared) == 1 and isinstance(next(iter(compared)), str):
        return "This comparison"
    return "This sweep"


def _tally(found: list[dict]) -> tuple[int, int, int]:
    """How many comparisons found the power of two or multiple of 8 faster, slower, neither."""
    faster = sum(c["ci_low"] is not None and c["ci_low"] > 0 for c in found)
    slower = sum(c["ci_high"] is not None and c["ci_high"] < 0 for c in found)
    return faster, slower, len(found) - faster - slower


def _counts(found: list[dict]) -> str:
    faster, slower, neither = _tally(found)
    return (f"Of {plural(len(found), 'comparison')}, {faster} found the power of two or multiple of 8 faster, "
            f"{slower} slower, "
            f"and {neither} no detectable difference (or too few runs to tell).")


def _table(found: list[dict]) -> list[str]:
    """The comparisons' table and what they add up to."""
    named = any(c["setting"] for c in found)  # one setting: no column that names nothing
    header = ["batch size", "", "against", "runs", "difference in samples/s", "95% interval", "reading",
              *(["setting"] if named else [])]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for c in found:
        lines.append(f"| {c['batch_size']} | {c['kind']} | {c['against']} | {c['runs']} | "
                     f"{_pct(c['ratio'])} | {interval_cell(c)} | {_marked(c)} |" + (f" {c['setting']} |" if named else ""))
    return lines + ["", _counts(found), "", *_busy_note(found)]
