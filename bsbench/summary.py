"""The table at the end of a sweep: summary.csv (every scalar field of every run) and summary.md (the
published table's columns), derived only from the runs' results.json files."""

import csv
from pathlib import Path

from bsbench.result import read_results

# The first CSV columns, in this order; any other scalar field follows, sorted by name.
LEADING = [
    "status", "batch_size", "global_batch_size", "precision", "precision_used", "devices", "world_size",
    "strategy", "accelerator", "epochs", "model", "data", "image_size", "train_time_s",
    "inference_time_s", "train_samples_per_s", "inference_samples_per_s", "val_acc", "test_acc",
    "peak_memory_mib", "device_name", "run_dir",
]
TABLE_HEADER = ["batch size", "train time", "inf. time", "epochs", "device", "precision", "samples/s", "test acc",
                "overrides"]


def _sort_key(r: dict):
    return (str(r.get("model")), str(r.get("data")), str(r.get("precision")), r.get("world_size") or 0,
            r.get("batch_size") or 0, r.get("run_dir", ""))


def _csv_value(v):
    return ";".join(f"{x:.4f}" if isinstance(x, float) else str(x) for x in v) if isinstance(v, list) else v


def write_csv(results: list[dict], path: Path) -> None:
    keys = {k for r in results for k, v in r.items() if not isinstance(v, dict)}
    columns = [k for k in LEADING if k in keys] + sorted(keys - set(LEADING))
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        for r in results:
            writer.writerow({k: _csv_value(r.get(k)) for k in columns})


def format_duration(seconds: float | None) -> str:
    """Minutes, like the published table, once runs take that long; seconds below a minute."""
    if seconds is None:
        return ""
    return f"{seconds / 60:.2f} min" if seconds >= 60 else f"{seconds:.2f} s"


def _device(r: dict) -> str:
    name = r.get("device_name") or r.get("device_type") or ""
    return f"{r['world_size']}x {name}" if (r.get("world_size") or 1) > 1 else name


def markdown_table(results: list[dict]) -> str:
    rows = [TABLE_HEADER, ["---"] * len(TABLE_HEADER)]
    for r in results:
        rate, acc = r.get("train_samples_per_s"), r.get("test_acc")
        rows.append([
            str(r.get("batch_size")) if r.get("status") == "ok" else f"{r.get('batch_size')} ({r.get('status')})",
            format_duration(r.get("train_time_s")),
            format_duration(r.get("inference_time_s")),
            str(r.get("epochs", "")),
            _device(r),
            str(r.get("precision_used") or r.get("precision")),
            f"{rate:.0f}" if rate else "",
            f"{acc:.4f}" if acc is not None else "",
            " ".join(r.get("overrides") or []),
        ])
    return "\n".join("| " + " | ".join(row) + " |" for row in rows) + "\n"


def status_notes(results: list[dict]) -> str:
    """What a reader of the table must not miss: runs that did not finish, and the memory edge."""
    notes = []
    oom = [r for r in results if r.get("status") == "oom"]
    if oom:
        fit = [r["batch_size"] for r in results if r.get("status") == "ok"]
        notes.append(f"Out of memory at batch size {', '.join(str(r['batch_size']) for r in oom)}; "
                     f"the largest batch size that fit: {max(fit) if fit else 'none'}.")
    for r in results:
        if r.get("status") not in ("ok", "oom"):
            why = f": {r['error_type']}: {r['error']}" if r.get("error") else ""
            notes.append(f"{r.get('status')}: {' '.join(r.get('overrides') or [])} ({r['run_dir']}){why}")
    return "".join(f"- {n}\n" for n in notes)


def summarize(directory: Path) -> tuple[str, list[dict]]:
    """Write summary.csv and summary.md into `directory` from the results.json files under it;
    return the markdown table (with its notes) and the results."""
    directory = Path(directory)
    results = sorted(read_results(directory), key=_sort_key)
    write_csv(results, directory / "summary.csv")
    counts = ", ".join(f"{sum(r.get('status') == s for r in results)} {s}"
                       for s in dict.fromkeys(r.get("status") for r in results))
    notes = status_notes(results)
    table = markdown_table(results) + ("\n" + notes if notes else "")
    (directory / "summary.md").write_text(
        f"# bsbench sweep: {directory}\n\n{len(results)} runs ({counts}); times are wall-clock, samples/s is the "
        "steady-state training rate (warm-up steps excluded).\n\n" + table
    )
    return table, results
