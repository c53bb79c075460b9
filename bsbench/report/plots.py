"""PNG plots of a sweep: throughput, time per epoch, MFU and (mode=inference) latency against batch
size, one line per setting through the geometric means, every run beside them, 95% intervals as error
bars where a batch size ran at least twice, the powers of two and multiples of 8 marked, and the
y-axis from zero."""

import io
from pathlib import Path

# The object-oriented API without pyplot: files only, no display, and no backend chosen for whoever
# else in the process uses matplotlib.
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from bsbench.core.results import write_atomic
from bsbench.report.stats import describe
from bsbench.report.verdict import is_power_of_two

PLOTS = {
    "samples_per_s.png": ("samples_per_s_values", "{measures} throughput (samples/s)"),
    "epoch_time.png": ("epoch_time_s_values", "time per epoch, validation included (s)"),
    "mfu.png": ("mfu_percent_values", "{measures} model FLOPs utilization (% of the devices' dense peak)"),
    "latency.png": ("latency_median_ms_values", "inference latency per batch, median (ms)"),
}


def _label(template: str, field: str, rows: list[dict]) -> str:
    """A plot's y label, naming what its rows measure (training, inference) where they all measure one thing."""
    measured = {row.get("measures") or "training" for row in rows if row.get(field)}
    return template.format(measures=measured.pop() if len(measured) == 1 else "").strip()


def _error(values: list[float]) -> tuple[float, float, float]:
    """The mean and how far its 95% interval reaches below and above it (log scale: asymmetric)."""
    stats = describe(values, log=True)
    if stats["ci_low"] is None:
        return stats["mean"], 0.0, 0.0
    return stats["mean"], stats["mean"] - stats["ci_low"], stats["ci_high"] - stats["mean"]


def title(rows: list[dict], ylabel: str) -> str:
    """What every plotted configuration shares: model, image size, device, precision, mode (what differs
    between them is in the legend)."""
    def common(field):
        values = {row.get(field) for row in rows}
        return values.pop() if len(values) == 1 else None

    parts = [common("model"), f"{common('image_size')} px" if common("image_size") else None,
             common("device_name"), common("precision_used"), f"mode={common('mode')}" if common("mode") else None]
    return f"{ylabel.split(' (')[0]}: " + ", ".join(str(p) for p in parts if p)


def figure(rows: list[dict], field: str, ylabel: str):
    fig = Figure(figsize=(9, 5), dpi=100)
    ax = fig.subplots()
    groups: dict[str, list[dict]] = {}
    for row in rows:
        if row.get(field):
            groups.setdefault(row["setting"], []).append(row)
    plotted = [row for group in groups.values() for row in group]
    sizes = sorted({row["batch_size"] for row in plotted})
    repeated = any(len(row[field]) > 1 for row in plotted)
    for setting, group in groups.items():
        group.sort(key=lambda row: row["batch_size"])
        x = [row["batch_size"] for row in group]
        means, below, above = zip(*(_error(row[field]) for row in group))
        line = ax.errorbar(x, means, yerr=[below, above] if repeated else None, marker="o", ms=4, capsize=3,
                           label=setting or ("geometric mean of the runs" if repeated else "one run per batch size"))
        if repeated:  # every run beside the mean (a little to its right, clear of the error bar)
            runs_x = [row["batch_size"] + 0.12 for row in group for _ in row[field]]
            runs_y = [value for row in group for value in row[field]]
            ax.plot(runs_x, runs_y, ".", ms=5, alpha=0.45, color=line.lines[0].get_color())
        for xi, yi in zip(x, means):
            if is_power_of_two(xi):
                ax.plot(xi, yi, marker="*", ms=16, color="crimson", zorder=3)
            elif xi % 8 == 0:
                ax.plot(xi, yi, marker="D", ms=8, mfc="none", mec="darkorange", mew=2, zorder=3)
    for size in sizes:
        if is_power_of_two(size):
            ax.axvline(size, color="crimson", lw=0.8, ls="--", alpha=0.6)
        elif size % 8 == 0:
            ax.axvline(size, color="darkorange", lw=0.8, ls=":", alpha=0.6)
    ax.plot([], [], "*", ms=12, color="crimson", label="power of two")
    ax.plot([], [], "D", ms=7, mfc="none", mec="darkorange", mew=2, label="multiple of 8")
    if repeated:
        ax.plot([], [], ".", ms=5, alpha=0.45, color="gray", label="single runs")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("batch size (per device)")
    ax.set_ylabel(ylabel)
    # from zero: a 2% difference looks like one (the verdict gives it with its interval)
    ax.set_ylim(0, max(max(row[field]) for row in plotted) * 1.12)
    ax.set_title(title(plotted, ylabel), fontsize=11)
    note = ("error bars: 95% interval of the geometric mean over a batch size's runs" if repeated
            else "one run per batch size: no interval (repeats=3 gives one)")
    ax.text(0.99, 0.02, note + "; y-axis from 0", transform=ax.transAxes, ha="right", va="bottom", fontsize=8,
            color="dimgray")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    return fig


def save_png(fig, path: Path, title: str) -> None:
    """The figure as a PNG file, written atomically: a full disk leaves no partial image."""
    data = io.BytesIO()
    fig.savefig(data, format="png", metadata={"Title": title})
    write_atomic(path, data.getvalue())


def write_plots(rows: list[dict], directory: Path) -> list[Path]:
    written = []
    for name, (field, template) in PLOTS.items():
        if not any(row.get(field) for row in rows):
            continue
        ylabel = _label(template, field, rows)
        save_png(figure(rows, field, ylabel), directory / name, f"bsbench: {ylabel}")
        written.append(directory / name)
    return written
