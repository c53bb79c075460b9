"""PNG plots of a sweep: throughput and time per epoch against batch size, one line per setting, with
95% intervals as error bars and the powers of two and multiples of 8 marked."""

from pathlib import Path

# The object-oriented API without pyplot: files only, no display, and no backend chosen for whoever
# else in the process uses matplotlib.
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from bsbench.report.stats import describe
from bsbench.report.verdict import is_power_of_two

PLOTS = {
    "samples_per_s.png": ("train_samples_per_s_values", "training throughput (samples/s)"),
    "epoch_time.png": ("epoch_time_s_values", "time per epoch, validation included (s)"),
    "mfu.png": ("mfu_percent_values", "model FLOPs utilization (% of the devices' dense peak)"),
}


def _error(values: list[float]) -> tuple[float, float, float]:
    """The mean and how far its 95% interval reaches below and above it (log scale: asymmetric)."""
    stats = describe(values, log=True)
    if stats["ci_low"] is None:
        return stats["mean"], 0.0, 0.0
    return stats["mean"], stats["mean"] - stats["ci_low"], stats["ci_high"] - stats["mean"]


def figure(rows: list[dict], field: str, ylabel: str):
    fig = Figure(figsize=(9, 5), dpi=100)
    ax = fig.subplots()
    groups: dict[str, list[dict]] = {}
    for row in rows:
        if row[field]:
            groups.setdefault(row["setting"], []).append(row)
    sizes = sorted({row["batch_size"] for group in groups.values() for row in group})
    for setting, group in groups.items():
        group.sort(key=lambda row: row["batch_size"])
        x = [row["batch_size"] for row in group]
        means, below, above = zip(*(_error(row[field]) for row in group))
        ax.errorbar(x, means, yerr=[below, above], marker="o", ms=4, capsize=3, label=setting or None)
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
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("batch size (per device)")
    ax.set_ylabel(ylabel)
    ax.set_title("error bars: 95% interval of the mean over repeats", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def write_plots(rows: list[dict], directory: Path) -> list[Path]:
    written = []
    for name, (field, ylabel) in PLOTS.items():
        if not any(row[field] for row in rows):
            continue
        fig = figure(rows, field, ylabel)
        fig.savefig(directory / name, metadata={"Title": f"bsbench: {ylabel}"})
        written.append(directory / name)
    return written
