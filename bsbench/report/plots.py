"""PNG plots of a sweep: throughput, time per epoch, MFU and (mode=inference) latency against batch
size. One series per setting (its own colour and marker, set a little apart where several share a batch
size) through the geometric means, every run beside them, 95% intervals as error bars where a batch
size ran at least twice (a mode=compare run's throughput: over its rounds); the powers of two and
multiples of 8 marked by lines behind the data and by their tick labels, never over a point; a ring
around a point where a run was measured on a busy machine (bsbench.job.noise); ticks only at batch
sizes that ran; the y-axis from zero to above the highest interval, or where one reaches far above the
measured points, to above them, that interval cut with an arrow and its end written; title, caption and legend
inside the figure, the legend beside the axes, not on the data."""

import io
import math
import textwrap
from pathlib import Path

# The object-oriented API without pyplot: files only, no display, and no backend chosen for whoever
# else in the process uses matplotlib.
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from bsbench.core.numbers import number
from bsbench.core.results import write_atomic
from bsbench.core.stats import describe
from bsbench.report.summary import over_rounds
from bsbench.core.arms import is_power_of_two
from bsbench.report.verdict import BUSY  # the gid of the ring around a busy run's point

PLOTS = {
    "samples_per_s.png": ("samples_per_s_values", "{measures} throughput (samples/s)"),
    "epoch_time.png": ("epoch_time_s_values", "time per epoch, validation included (s)"),
    "mfu.png": ("mfu_percent_values", "{measures} model FLOPs utilization (% of the devices' dense peak)"),
    "latency.png": ("latency_median_ms_values", "inference latency per batch, median (ms)"),
}
MARKERS = ("o", "s", "^", "D", "v", "P", "X")  # 7 markers against 10 colours: 70 series before a pair repeats
POWER_OF_TWO, MULTIPLE_OF_8 = "crimson", "darkorange"
CUT = 1.5  # an interval reaching above this many times the highest measured point is cut at the axis' top
MAX_TICKS = 20  # beyond it, every k-th batch size that ran is labelled (and every power of two)
SPREAD = 0.4  # of the gap between neighbouring batch sizes: how far apart the series at one batch size are


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


def axis_top(points: list[float], reaches: list[float]) -> float:
    """The y-axis' top: above every interval's end where they stay near the measured points (means and single
    values), else fitted to the points, with the intervals that reach further cut (interval_bars): one
    two-round interval must not flatten every point into the bottom of the plot."""
    highest = max(points)
    reach = max([highest, *reaches])
    return reach * 1.08 if reach <= CUT * highest else highest * 1.25


def interval_bars(ax, x, means, below, above, top: float, **style):
    """Error bars (none where `below` is None) whose ends above `top` are cut there: such a bar ends at the
    axis with an arrow, its true end written beside it."""
    if below is None:
        return ax.errorbar(x, means, **style)
    edge = top * 0.985
    shown = [min(a, max(0.0, edge - m)) for m, a in zip(means, above)]
    container = ax.errorbar(x, means, yerr=[below, shown], **style)
    color = container.lines[0].get_color()
    for at, m, a in zip(x, means, above):
        if m + a > edge:
            ax.plot([at], [edge], marker="^", ms=6, color=color, zorder=style.get("zorder", 3), clip_on=False)
            ax.annotate(f"interval to {number(m + a)}", (at, edge), xytext=(5, -2), textcoords="offset points",
                        fontsize=7, va="top", color=color)
    return container


def values(row: dict, field: str) -> list[float]:
    """What a point's mean and interval are computed from: its runs' values, or for the throughput of a
    mode=compare configuration, its rounds (as summary.md gives it)."""
    if field == "samples_per_s_values" and over_rounds(row):
        return [v for rounds in row["round_values"].values() for v in rounds]
    return row[field]


def title(rows: list[dict], ylabel: str) -> str:
    """What every plotted configuration shares: model, image size, device, precision, mode (what differs
    between them is in the legend)."""
    def common(field):
        found = {row.get(field) for row in rows}
        return found.pop() if len(found) == 1 else None

    parts = [common("model"), f"{common('image_size')} px" if common("image_size") else None,
             common("device_name"), common("precision_used"), f"mode={common('mode')}" if common("mode") else None]
    return f"{ylabel.split(' (')[0]}: " + ", ".join(str(p) for p in parts if p)


def caption(rows: list[dict], field: str, repeated: bool) -> str:
    """What the error bars are, or why there are none and what would give them."""
    rounds = [row for row in rows if row.get("round_values")]
    if repeated:
        over = " (a compare run's: over its rounds)" if field == "samples_per_s_values" and rounds else ""
        text = f"error bars: 95% interval of the geometric mean over a batch size's runs{over}; dots: single values"
    elif rounds and len(rounds) == len(rows):
        text = ("one compare round per batch size: no interval (compare.rounds=3 or more gives one)"
                if field == "samples_per_s_values" else
                "one value per compare run: its interval over rounds is on the samples/s plot")
    else:
        text = "one run per batch size: no interval (repeats=3 gives one)"
    return f"{text}; y-axis from 0"


def ticks(sizes: list[int]) -> list[int]:
    """The batch sizes labelled on the x-axis: every one that ran, or where they are too many to read,
    every k-th and every power of two."""
    if len(sizes) <= MAX_TICKS:
        return sizes
    step = math.ceil(len(sizes) / MAX_TICKS)
    return sorted(set(sizes[::step]) | {b for b in sizes if is_power_of_two(b)})


def figure(rows: list[dict], field: str, ylabel: str) -> Figure:
    groups: dict[str, list[dict]] = {}
    for row in rows:
        if row.get(field):
            groups.setdefault(row["setting"], []).append(row)
    plotted = [row for group in groups.values() for row in group]
    sizes = sorted({row["batch_size"] for row in plotted})
    repeated = any(len(values(row, field)) > 1 for row in plotted)
    gap = min((b - a for a, b in zip(sizes, sizes[1:])), default=max(1, sizes[0] // 4))
    step = SPREAD * gap / len(groups)  # between the series at one batch size
    fig = Figure(figsize=(9, 5), dpi=100, layout="constrained")
    ax = fig.subplots()
    drawn = {setting: [_error(values(row, field)) for row in sorted(group, key=lambda row: row["batch_size"])]
             for setting, group in groups.items()}
    top = axis_top([m for bars in drawn.values() for m, _, _ in bars]
                   + ([v for row in plotted for v in values(row, field)] if repeated else []),
                   [m + a for bars in drawn.values() for m, _, a in bars])
    handles = []
    for i, (setting, group) in enumerate(groups.items()):
        group.sort(key=lambda row: row["batch_size"])
        shift = (i - (len(groups) - 1) / 2) * step
        x = [row["batch_size"] + shift for row in group]
        means, below, above = zip(*drawn[setting])
        color, marker = f"C{i % 10}", MARKERS[i % len(MARKERS)]
        name = setting or ("geometric mean of the runs" if repeated else "one run per batch size")
        container = interval_bars(ax, x, means, below if repeated else None, above, top, color=color, marker=marker,
                                  ms=6, capsize=3, lw=1.2, zorder=3, label=textwrap.fill(name, 32))
        handles.append(container)
        busy = [(at, mean) for at, mean, row in zip(x, means, group) if row.get("busy_runs")]
        if busy:  # a ring around the point (the noise sentinel): not a series, drawn over it, hiding nothing
            ax.plot(*zip(*busy), ls="none", marker="o", ms=13, mfc="none", mec="black", mew=1.1, zorder=4, gid=BUSY)
        if repeated:  # every value beside its mean (a little to its right, clear of the error bar)
            runs_x = [row["batch_size"] + shift + step / 3 for row in group for _ in values(row, field)]
            runs_y = [v for row in group for v in values(row, field)]
            ax.plot(runs_x, runs_y, ".", ms=5, alpha=0.45, color=color, zorder=2)
    marks = {"power of two": ([b for b in sizes if is_power_of_two(b)], POWER_OF_TWO, "--"),
             "multiple of 8": ([b for b in sizes if b % 8 == 0 and not is_power_of_two(b)], MULTIPLE_OF_8, ":")}
    for name, (at, color, style) in marks.items():
        for size in at:  # behind every point (zorder 0), thin: they never hide one
            ax.axvline(size, color=color, lw=0.9, ls=style, alpha=0.7, zorder=0, gid=name)
        if at:
            handles.append(Line2D([], [], color=color, lw=0.9, ls=style, label=f"{name} (line, tick label)"))
    if repeated:
        handles.append(Line2D([], [], ls="none", marker=".", ms=5, alpha=0.45, color="gray", label="single values"))
    if any(line.get_gid() == BUSY for line in ax.lines):
        handles.append(Line2D([], [], ls="none", marker="o", ms=9, mfc="none", mec="black", mew=1.1,
                              label=textwrap.fill("ringed: a run measured on a busy machine (summary.md says which)",
                                                  32)))
    labelled = ticks(sizes)
    ax.set_xticks(labelled, [str(b) for b in labelled], rotation=45 if len(labelled) > 12 else 0, fontsize=8)
    for text, size in zip(ax.get_xticklabels(), labelled):
        if is_power_of_two(size) or size % 8 == 0:
            text.set_color(POWER_OF_TWO if is_power_of_two(size) else MULTIPLE_OF_8)
            text.set_fontweight("bold")
    ax.set_xlim(sizes[0] - 0.6 * gap, sizes[-1] + 0.6 * gap)
    # from zero (a 2% difference looks like one; the verdict gives it with its interval) to above the points
    ax.set_ylim(0, top)
    ax.set_xlabel("batch size (per device)")
    ax.set_ylabel(textwrap.fill(ylabel, 48))
    ax.grid(alpha=0.3)
    ax.set_title(textwrap.fill(title(plotted, ylabel), 72), fontsize=11)  # over the axes, clear of the legend
    fig.supxlabel(textwrap.fill(caption(plotted, field, repeated), 120), fontsize=8, color="dimgray")
    fig.legend(handles=handles, loc="outside right upper", fontsize=8)
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
