"""Tables derived from the runs' results.json files, and nothing else: runs.csv (every scalar field
of every run), summary.csv and summary.md (per configuration: run count, mean, standard deviation and
95% interval of the timings). Runs that did not finish are listed, never averaged."""

import csv
import io
import json
from pathlib import Path

from bsbench.core.fields import ANSWERED, FIELD_NAMES, Status, setting, setting_key
from bsbench.core.numbers import number, quantity
from bsbench.core.results import write_atomic
from bsbench.modes import MODES
from bsbench.core.stats import describe

# Per-configuration statistics: (result field or derived name, heading). All are positive quantities:
# geometric means and intervals on the log scale (bsbench.core.stats.describe).
# samples_per_s, tflops and mfu are the rate a run's mode measures: training's, or mode=inference's
# forward passes (RATE_FIELDS).
METRICS = {
    "train_time_s": "train time (s)",
    "train_time_per_sample_us": "train time per sample (µs)",
    "samples_per_s": "samples/s",
    "inference_time_s": "inference time (s)",
    "tflops": "achieved TFLOP/s",
    "mfu": "MFU",
    "latency_median_ms": "latency per batch, median (ms)",
    "latency_p95_ms": "latency per batch, p95 (ms)",
    "joules_per_sample": "energy per image (J)",
}
TRAINING = {"samples_per_s": "train_samples_per_s", "tflops": "train_tflops", "mfu": "mfu"}
RATE_FIELDS = {
    "training": TRAINING,
    "profiled training": TRAINING,  # mode=profile: the traced steps, the profiler's overhead in them
    "inference": {"samples_per_s": "inference_samples_per_s", "tflops": "inference_tflops", "mfu": "inference_mfu"},
}
# summary.csv's first columns; the statistics of METRICS follow.
SUMMARY_LEADING = ["setting", "batch_size", "runs", "measures", "model", "data", "image_size", "precision_used",
                   "world_size", "epochs", "device_name"]


def group_key(result: dict) -> str:
    """Runs are comparable when their settings are equal and they ran on the same device."""
    return json.dumps([setting_key(setting(result)), result.get("device_name")])


def label_groups(results: list[dict]) -> dict[str, str]:
    """A short name per group: the settings that differ between groups, each once, and the device
    where devices differ, e.g. 'precision=bf16-mixed'. Where the groups' modes differ, a key that only
    follows from the mode (each mode's rows share its value, and no command set it: mode=inference's
    trainer.max_steps) is left out: the mode names it."""
    groups = {group_key(r): (setting(r), r.get("device_name")) for r in results}
    keys = sorted({k for s, _ in groups.values() for k in s})
    varying = [k for k in keys if len({json.dumps(s.get(k), default=str) for s, _ in groups.values()}) > 1]
    if "mode" in varying:
        written = {o.split("=", 1)[0].lstrip("+~") for r in results for o in r.get("overrides") or []
                   if isinstance(o, str)}
        varying = [k for k in varying if k == "mode" or k in written or not _follows_mode(k, groups.values())]
    devices_vary = len({device for _, device in groups.values()}) > 1
    return {g: " ".join([f"{k}={s.get(k)}" for k in varying] + ([f"device={device}"] if devices_vary else []))
            for g, (s, device) in groups.items()}


def shared_settings(results: list[dict]) -> dict:
    """The settings every finished run shares (report.html lists them beside what differs)."""
    settings = [setting(r) for r in results if r.get("status") == Status.OK]
    if not settings:
        return {}
    return {k: v for k, v in settings[0].items()
            if all(json.dumps(s.get(k), default=str) == json.dumps(v, default=str) for s in settings[1:])}


def _follows_mode(key: str, groups) -> bool:
    """Whether every group of one mode has the same value of `key`."""
    by_mode: dict[str, set] = {}
    for s, _ in groups:
        by_mode.setdefault(str(s.get("mode")), set()).add(json.dumps(s.get(key), default=str))
    return all(len(found) == 1 for found in by_mode.values())


def _rounds(r: dict) -> bool:
    """A compare run's per-round rates, where they are usable."""
    rounds = r.get("round_samples_per_s")
    return isinstance(r.get("compare_id"), str) and isinstance(rounds, list) and bool(rounds) and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 for v in rounds)


def over_rounds(row: dict) -> bool:
    """Whether a configuration's samples/s interval is over rounds: every run of it was a mode=compare
    run that recorded its rate per round."""
    return bool(row.get("round_values")) and len(row["round_values"]) == row["runs"]


def measures(r: dict) -> str:
    """What a run's samples/s is the rate of: `inference` (mode=inference's forward passes), `profiled
    training` (mode=profile's traced steps) or `training`."""
    mode = MODES.get(r.get("mode")) if isinstance(r.get("mode"), str) else None
    return mode.measures if mode is not None else "training"


def value(r: dict, metric: str):
    """A run's value of a METRICS entry."""
    if metric == "train_time_per_sample_us":
        return per_sample_us(r)
    return r.get(RATE_FIELDS[measures(r)].get(metric, metric))


def per_sample_us(r: dict) -> float | None:
    samples = r.get("train_samples")
    return r["train_time_s"] / samples * 1e6 if samples and r.get("train_time_s") else None


def configurations(results: list[dict]) -> list[dict]:
    """One row per (setting, batch size) over the ok runs: their count and statistics, and the per-run
    values that the verdict and the plots work from (samples_per_s_values, the rate of what the mode
    measures, `measures`: training, or mode=inference's forward passes; epoch_time_s_values, each run's
    mean epoch time, from mode=train runs only)."""
    labels = label_groups(results)
    groups: dict[tuple, list[dict]] = {}
    for r in results:
        # report_row false: a result that measured nothing itself (mode=tune's edge and its summary)
        if r.get("status") == Status.OK and r.get("report_row") is not False:
            groups.setdefault((group_key(r), r["batch_size"]), []).append(r)
    rows = []
    for (key, batch_size), runs in groups.items():
        first = runs[0]
        row = {"setting": labels[key], "batch_size": batch_size, "runs": len(runs), "_group": key}  # not a column
        for field in ("model", "data", "image_size", "precision_used", "world_size", "epochs", "device_name", "mode"):
            row[field] = first.get(field)
        row["measures"] = measures(first)  # one per group: the mode is part of the setting
        # mode=compare: each run's rate per round, by the compare run that measured it (the verdict pairs them)
        row["round_values"] = {r["compare_id"]: r["round_samples_per_s"] for r in runs if _rounds(r)}
        for metric in METRICS:
            values = [value(r, metric) for r in runs]
            if metric == "samples_per_s" and over_rounds(row):
                values = [v for rounds in row["round_values"].values() for v in rounds]  # the interval over rounds
            stats = describe([v for v in values if v is not None], log=True)
            row.update({f"{metric}_{k}": v for k, v in stats.items() if k != "n"})
        row["busy_runs"] = sum(r.get("busy") is True for r in runs)  # measured on a busy machine (the noise sentinel)
        accs = [r["test_acc"] for r in runs if r.get("test_acc") is not None]
        row["test_acc_mean"] = sum(accs) / len(accs) if accs else None
        row["samples_per_s_values"] = [v for r in runs if (v := value(r, "samples_per_s"))]
        row["mfu_percent_values"] = [100 * v for r in runs if (v := value(r, "mfu"))]
        row["latency_median_ms_values"] = [v for r in runs if (v := r.get("latency_median_ms"))]
        row["epoch_time_s_values"] = [sum(r["epoch_times_s"]) / len(r["epoch_times_s"]) for r in runs
                                      if r.get("epoch_times_s") and r.get("mode") == "train"]  # whole epochs only
        rows.append(row)
    return sorted(rows, key=lambda row: (row["setting"], row["batch_size"]))


def _csv_value(v):
    return ";".join(f"{x:.4f}" if isinstance(x, float) else str(x) for x in v) if isinstance(v, list) else v


def write_csv(rows: list[dict], path: Path, leading: list[str] = FIELD_NAMES) -> None:
    """One row per dict, the `leading` columns first (by default the result fields in the schema's
    order), then every other scalar field by name."""
    keys = {k for r in rows for k, v in r.items() if not isinstance(v, dict) and not k.startswith("_")}
    columns = [k for k in leading if k in keys] + sorted(keys - set(leading))
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=columns)
    writer.writeheader()
    for r in rows:
        writer.writerow({k: _csv_value(r.get(k)) for k in columns})
    write_atomic(path, text.getvalue())


def format_duration(seconds: float | None) -> str:
    """Minutes, like the published table, once runs take that long; seconds below a minute."""
    if seconds is None:
        return ""
    return quantity(seconds / 60, "min") if seconds >= 60 else quantity(seconds, "s")


def _spread(row: dict, metric: str) -> str:
    """'1.23 ± 0.05 s': the mean and the standard deviation, in the mean's unit and decimals."""
    mean, sd = row[f"{metric}_mean"], row[f"{metric}_sd"]
    if mean is None:
        return ""
    if sd is None:
        return format_duration(mean)
    scale, unit = (60, "min") if mean >= 60 else (1, "s")
    return f"{number(mean / scale)} ± {quantity(sd / scale, unit, like=mean / scale)}"


def _device(row: dict) -> str:
    name = row.get("device_name") or ""
    return f"{row['world_size']}x {name}" if (row.get("world_size") or 1) > 1 else name


TABLE_HEADER = ["batch size", "runs", "train time", "inf. time", "epochs", "device", "precision",
                "samples/s (95% CI)", "TFLOP/s (MFU)", "test acc", "setting"]


def _flops(row: dict) -> str:
    """Achieved TFLOP/s, with MFU where the device's peak is known."""
    tflops, mfu = row["tflops_mean"], row["mfu_mean"]
    if tflops is None:
        return ""
    return number(tflops) + (f" ({quantity(100 * mfu, '%')})" if mfu is not None else "")


def _runs(row: dict) -> str:
    rounds = sum(len(v) for v in (row.get("round_values") or {}).values())
    notes = [f"{rounds} rounds"] * bool(rounds) + [f"{row['busy_runs']} busy"] * bool(row.get("busy_runs"))
    return f"{row['runs']} ({', '.join(notes)})" if notes else str(row["runs"])


def _joules(row: dict) -> str:
    mean = row["joules_per_sample_mean"]
    return "" if mean is None else number(mean)


def _latency(row: dict) -> str:
    median, p95 = row["latency_median_ms_mean"], row["latency_p95_ms_mean"]
    return "" if median is None else f"{number(median)} / {number(p95)}"


def markdown_table(rows: list[dict]) -> str:
    """The summary table; mode=inference's rows add their latency column, and samples/s is each row's
    own mode's rate (a `samples/s of` column says which where the table holds several). A column empty
    in every row is left out."""
    latency = any(row["latency_median_ms_mean"] is not None for row in rows)
    both = len({row["measures"] for row in rows}) > 1
    header = list(TABLE_HEADER)
    if latency:
        header.insert(header.index("TFLOP/s (MFU)"), "latency p50 / p95 (ms)")
    if both:
        header.insert(header.index("samples/s (95% CI)"), "samples/s of")
    energy = any(row["joules_per_sample_mean"] is not None for row in rows)
    if energy:  # NVML's energy counter, over the timed steps (bsbench.training.energy)
        header.insert(header.index("samples/s (95% CI)") + 1, "J/image")
    lines = [header, ["---"] * len(header)]
    for row in rows:
        rate = row["samples_per_s_mean"]
        rate_text = number(rate) if rate else ""
        if row["samples_per_s_ci_low"] is not None:  # the interval's ends in the mean's decimals
            low, high = row["samples_per_s_ci_low"], row["samples_per_s_ci_high"]
            rate_text += f" ({number(low, rate)}–{number(high, rate)})"
        acc = row["test_acc_mean"]
        lines.append([
            str(row["batch_size"]), _runs(row), _spread(row, "train_time_s"), _spread(row, "inference_time_s"),
            str(row.get("epochs") or ""), _device(row), str(row.get("precision_used") or ""),
            *([row["measures"]] if both else []), rate_text, *([_joules(row)] if energy else []),
            *([_latency(row)] if latency else []), _flops(row),
            f"{acc:.4f}" if acc is not None else "", row["setting"],
        ])
    if rows:  # no column that every row leaves empty (one setting: none that names nothing; mode=throughput:
        # no test accuracy, no epochs)
        kept = [i for i in range(len(header)) if any(line[i] for line in lines[2:])]
        lines = [[line[i] for i in kept] for line in lines]
    return "\n".join("| " + " | ".join(line) + " |" for line in lines) + "\n"


def status_notes(results: list[dict], unreadable: list[tuple[str, str]] = (),
                 absent: tuple[list[dict], list[dict]] = ([], [])) -> str:
    """What a reader of the table must not miss: runs that did not finish, the memory edge, runs whose
    loss was not finite, results.json files that could not be read, and the jobs a sweep planned that
    have none (`absent`: bsbench.core.plan.without_results)."""
    notes = []
    oom = [r for r in results if r.get("status") == Status.OOM]
    if oom:
        fit = [r["batch_size"] for r in results if r.get("status") == Status.OK]
        notes.append(f"Out of memory at batch size {', '.join(str(r['batch_size']) for r in oom)}; "
                     f"the largest batch size that fit: {max(fit) if fit else 'none'}.")
    unfinished: dict[tuple, list[dict]] = {}  # runs that failed alike are told once
    for r in results:
        if r.get("status") not in ANSWERED:
            unfinished.setdefault((r.get("status"), r.get("error_type"), r.get("error")), []).append(r)
    for (status, error_type, error), runs in unfinished.items():
        why = f": {error_type}: {error}" if error else ""
        if len(runs) == 1:
            notes.append(f"{status}: {' '.join(runs[0].get('overrides') or [])} ({runs[0]['run_dir']}){why}")
        else:
            dirs = ", ".join(Path(r["run_dir"]).name for r in runs[:8]) + (", ..." if len(runs) > 8 else "")
            notes.append(f"{status}, {len(runs)} runs (job directories {dirs}){why}")
    for r in results:
        if r.get("nonfinite_loss_steps"):
            notes.append(f"batch size {r['batch_size']} ({r['run_dir']}): the training loss was NaN or infinite in "
                         f"{r['nonfinite_loss_steps']} steps; its timings stand, its accuracy does not.")
    busy = [r for r in results if r.get("busy") is True and r.get("report_row") is not False]
    if busy:
        where = "; ".join(f"batch size {r['batch_size']} ({_run_name(r)}: {r.get('busy_reason')})" for r in busy[:8])
        notes.append(f"Measured on a busy machine ({len(busy)} of {plural(len(results), 'run')}; `busy` in runs.csv, "
                     f"marked in the runs column, the plots and the verdict): {where}{'; ...' if len(busy) > 8 else ''}. "
                     "Their figures are slower and noisier than a quiet machine gives.")
    bound = [r for r in results if r.get("input_bound") is True and r.get("report_row") is not False]
    if bound:
        where = "; ".join(f"batch size {r['batch_size']} ({_run_name(r)}: {r['data_wait_fraction']:.0%})"
                          for r in bound[:8])
        notes.append(f"Input-bound ({len(bound)} of {plural(len(results), 'run')}; `data_wait_fraction` in runs.csv): "
                     f"their training steps waited for the next batch a fifth of the time or more: {where}"
                     f"{'; ...' if len(bound) > 8 else ''}. A faster input pipeline (more loader workers, pinned "
                     "memory, a cheaper transform, data on the device) would speed them more than the batch size.")
    for path, why in unreadable:
        notes.append(f"not read: {path} ({why})")
    notes += _absent_notes(*absent)
    return "".join(f"- {n}\n" for n in notes)


METHOD = "docs/method.md"  # bsbench's documentation page that tells the method in full


def plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _absent_notes(gone: list[dict], not_run: list[dict]) -> list[str]:
    """The planned jobs without a results.json, by sweep: a job's folder without one, then the jobs that
    never started."""
    def named(jobs: list[dict]) -> str:
        shown = [j["folder"] + (f" ({' '.join(j['varies'])})" if j.get("varies") else "") for j in jobs[:8]]
        return "; ".join(shown) + ("; ..." if len(jobs) > 8 else "")

    notes = []
    for jobs, what in ((gone, "planned and missing: {n} with a folder but no results.json (deleted, or the job "
                               "was killed before it wrote one)"),
                       (not_run, "planned and not run: {n} (the sweep stopped before them)")):
        for directory in dict.fromkeys(j["directory"] for j in jobs):
            here = [j for j in jobs if j["directory"] == directory]
            notes.append(what.format(n=plural(len(here), "job")) + f": {named(here)}; resume={directory} with the "
                         "sweep's command runs them.")
    return notes


def summary_markdown(directories: list[Path], results: list[dict], rows: list[dict],
                     unreadable: list[tuple[str, str]] = (), absent: tuple[list[dict], list[dict]] = ([], [])) -> str:
    counts = ", ".join(f"{sum(r.get('status') == s for r in results)} {s}"
                       for s in dict.fromkeys(r.get("status") for r in results))
    notes = status_notes(results, unreadable, absent)
    return (
        f"# bsbench summary: {', '.join(str(d) for d in directories)}\n\n"
        f"{plural(len(results), 'run')} ({counts or 'none'}) in {plural(len(rows), 'configuration')}. Times: "
        "geometric mean ± standard deviation over a configuration's runs. samples/s: the steady-state rate (warm-up "
        "excluded) with its 95% interval over the runs, or a compare run's rounds. How each figure is measured: "
        f"*The method* in bsbench's documentation ({METHOD}).\n\n"
        + markdown_table(rows) + ("\n" + notes if notes else "")
    )


def _run_name(r: dict) -> str:
    """A run as its folder names it: `bs32_r0_<id>`, or a tune's arm with its stage, `near/bs32`."""
    path = Path(str(r.get("run_dir")))
    return f"{path.parent.name}/{path.name}" if r.get("tune_stage") else path.name
