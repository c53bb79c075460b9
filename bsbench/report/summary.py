"""Tables derived from the runs' results.json files, and nothing else: runs.csv (every scalar field
of every run), summary.csv and summary.md (per configuration: run count, mean, standard deviation and
95% interval of the timings). Runs that did not finish are listed, never averaged."""

import csv
import io
import json
from pathlib import Path

from bsbench.core.fields import ANSWERED, FIELD_NAMES, Status, setting, setting_key
from bsbench.core.results import write_atomic
from bsbench.modes import MODES
from bsbench.report.stats import describe

# Per-configuration statistics: (result field or derived name, heading). All are positive quantities:
# geometric means and intervals on the log scale (bsbench.report.stats.describe).
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
    where devices differ, e.g. 'precision=bf16-mixed'."""
    groups = {group_key(r): (setting(r), r.get("device_name")) for r in results}
    keys = sorted({k for s, _ in groups.values() for k in s})
    varying = [k for k in keys if len({json.dumps(s.get(k), default=str) for s, _ in groups.values()}) > 1]
    devices_vary = len({device for _, device in groups.values()}) > 1
    return {g: " ".join([f"{k}={s.get(k)}" for k in varying] + ([f"device={device}"] if devices_vary else []))
            for g, (s, device) in groups.items()}


def _rounds(r: dict) -> bool:
    """A compare run's per-round rates, where they are usable."""
    rounds = r.get("round_samples_per_s")
    return isinstance(r.get("compare_id"), str) and isinstance(rounds, list) and bool(rounds) and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 for v in rounds)


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
            if metric == "samples_per_s" and row["round_values"] and len(row["round_values"]) == len(runs):
                values = [v for rounds in row["round_values"].values() for v in rounds]  # the interval over rounds
            stats = describe([v for v in values if v is not None], log=True)
            row.update({f"{metric}_{k}": v for k, v in stats.items() if k != "n"})
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
    return f"{seconds / 60:.2f} min" if seconds >= 60 else f"{seconds:.2f} s"


def _spread(row: dict, metric: str) -> str:
    mean, sd = row[f"{metric}_mean"], row[f"{metric}_sd"]
    if mean is None:
        return ""
    text = format_duration(mean)
    if sd is not None:  # in the mean's unit
        text += f" ± {sd / 60:.2f}" if mean >= 60 else f" ± {sd:.2f}"
    return text


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
    return f"{tflops:.3g}" + (f" ({100 * mfu:.1f}%)" if mfu is not None else "")


def _runs(row: dict) -> str:
    rounds = sum(len(v) for v in (row.get("round_values") or {}).values())
    return f"{row['runs']} ({rounds} rounds)" if rounds else str(row["runs"])


def _joules(row: dict) -> str:
    mean = row["joules_per_sample_mean"]
    return "" if mean is None else f"{mean:.3g}"


def _latency(row: dict) -> str:
    median, p95 = row["latency_median_ms_mean"], row["latency_p95_ms_mean"]
    return "" if median is None else f"{median:.3g} / {p95:.3g}"


def markdown_table(rows: list[dict]) -> str:
    """The summary table; mode=inference's rows add their latency column, and samples/s is each row's
    own mode's rate (a `samples/s of` column says which where the table holds several)."""
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
        rate_text = f"{rate:.0f}" if rate else ""
        if row["samples_per_s_ci_low"] is not None:
            rate_text += f" ({row['samples_per_s_ci_low']:.0f}–{row['samples_per_s_ci_high']:.0f})"
        acc = row["test_acc_mean"]
        lines.append([
            str(row["batch_size"]), _runs(row), _spread(row, "train_time_s"), _spread(row, "inference_time_s"),
            str(row.get("epochs") or ""), _device(row), str(row.get("precision_used") or ""),
            *([row["measures"]] if both else []), rate_text, *([_joules(row)] if energy else []),
            *([_latency(row)] if latency else []), _flops(row),
            f"{acc:.4f}" if acc is not None else "", row["setting"],
        ])
    return "\n".join("| " + " | ".join(line) + " |" for line in lines) + "\n"


def status_notes(results: list[dict], unreadable: list[tuple[str, str]] = ()) -> str:
    """What a reader of the table must not miss: runs that did not finish, the memory edge, runs whose
    loss was not finite, and results.json files that could not be read."""
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
    for path, why in unreadable:
        notes.append(f"not read: {path} ({why})")
    return "".join(f"- {n}\n" for n in notes)


def summary_markdown(directories: list[Path], results: list[dict], rows: list[dict],
                     unreadable: list[tuple[str, str]] = ()) -> str:
    counts = ", ".join(f"{sum(r.get('status') == s for r in results)} {s}"
                       for s in dict.fromkeys(r.get("status") for r in results))
    notes = status_notes(results, unreadable)
    return (
        f"# bsbench summary: {', '.join(str(d) for d in directories)}\n\n"
        f"{len(results)} runs ({counts or 'none'}) in {len(rows)} configurations. Times are wall-clock geometric "
        "means ± standard deviation over the runs of a configuration; samples/s is the steady-state training rate "
        "(warm-up steps excluded), its geometric mean with a 95% confidence interval (on the log scale, as the "
        "verdict compares rates) where a configuration ran at least twice (a `mode=compare` run: over its "
        "rounds); in `mode=inference` it is the rate of the timed forward passes, with the median and 95th "
        "percentile of their latency per batch. TFLOP/s is the achieved rate of the model's counted FLOPs, "
        "with MFU, its fraction of the devices' dense peak, where bsbench knows the peak.\n\n"
        + markdown_table(rows) + ("\n" + notes if notes else "")
    )
