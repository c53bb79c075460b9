"""The plots as a reader sees them, checked on the drawn figures (matplotlib's artists and renderer), for
every plot type: every point and interval inside the axes, title, caption and legend inside the figure
and clear of the data and of each other, the marks of powers of two and multiples of 8 behind every
point, one colour and marker per series, tick labels only at batch sizes that ran."""

import random

import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.lines import Line2D

from bsbench.report.plots import PLOTS, _label, figure
from bsbench.report.summary import configurations, label_groups
from bsbench.report.tune import figure as tune_figure
from bsbench.report.tune import tunes
from test_tune import _arm, planted_tune, rounds_around

MARKS = ("power of two", "multiple of 8")


def _inside(inner, outer, slack=1.0) -> bool:
    return (inner.x0 >= outer.x0 - slack and inner.y0 >= outer.y0 - slack and inner.x1 <= outer.x1 + slack
            and inner.y1 <= outer.y1 + slack)


def _overlap(a, b) -> bool:
    return a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1


def check_drawn(fig, ran: set[int]) -> dict:
    """Everything a reader relies on in a drawn figure; returns the series' points in display coordinates."""
    FigureCanvasAgg(fig).draw()
    renderer = fig.canvas.get_renderer()
    texts = list({id(t): t for t in [*fig.texts, getattr(fig, "_suptitle", None), getattr(fig, "_supxlabel", None)]
                  if t is not None and t.get_text()}.values())
    legends = [*fig.legends, *(ax.get_legend() for ax in fig.axes if ax.get_legend())]
    assert legends, "a legend says what is drawn"
    points = {}
    for ax in fig.axes:
        styles = []
        (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
        series = [c.lines[0] for c in ax.containers]
        lowest = min(line.get_zorder() for line in series)
        for line in ax.lines:
            if line.get_gid() in MARKS:  # a line behind the data, no marker on it
                assert line.get_zorder() < lowest and line.get_marker() in (None, "None", "", " ")
                continue
            if line.get_transform() != ax.transData or not len(line.get_xdata()):
                continue
            xy = np.column_stack([line.get_xdata(), line.get_ydata()]).astype(float)
            assert np.all((xy[:, 0] >= x0) & (xy[:, 0] <= x1) & (xy[:, 1] >= y0) & (xy[:, 1] <= y1)), (
                f"a point outside the axes: {xy.tolist()} in x {x0, x1}, y {y0, y1}")
            if line in series:
                points[line] = ax.transData.transform(xy)
                styles.append((line.get_color(), line.get_marker()))
        for collection in ax.collections:  # the error bars
            for segment in collection.get_segments():
                segment = np.asarray(segment, dtype=float)
                assert np.all((segment[:, 1] >= y0 - 1e-9) & (segment[:, 1] <= y1 + 1e-9)), (
                    f"an interval cut by the axes: {segment.tolist()} in y {y0, y1}")
        labels = [t.get_text() for t in ax.get_xticklabels() if t.get_text()]
        assert labels and all(int(label) in ran for label in labels), (labels, ran)
        texts += [t for t in (ax.title, ax.xaxis.label, ax.yaxis.label) if t.get_text()]
        assert len(set(styles)) == len(styles), f"two series drawn alike: {styles}"
    boxes = [t.get_window_extent(renderer) for t in texts] + [lg.get_window_extent(renderer) for lg in legends]
    for box in boxes:
        assert _inside(box, fig.bbox), f"cut by the figure's edge: {box} in {fig.bbox}"
    for i, a in enumerate(boxes):
        for b in boxes[i + 1:]:
            assert not _overlap(a, b), f"two texts over each other: {a}, {b}"
    for legend in legends:
        box = legend.get_window_extent(renderer)
        for xy in points.values():
            assert not any(box.contains(x, y) for x, y in xy), "the legend covers a point"
    return points


def result(batch_size, rate, mode="throughput", repeat=0, **settings):
    config = {"mode": mode, "precision": "32-true", "devices": 1, **settings}
    r = {"status": "ok", "mode": mode, "batch_size": batch_size, "repeat": repeat, "config": config,
         "world_size": settings.get("devices", 1), "device_name": "NVIDIA H100 80GB HBM3", "precision_used": "32-true",
         "model": "mobilenet_v3_large", "image_size": 224, "run_dir": f"/r/{mode}/{batch_size}/{repeat}",
         "overrides": [f"batch_size={batch_size}", *(f"{k}={v}" for k, v in settings.items())]}
    if mode == "inference":
        r.update(inference_samples_per_s=rate, latency_median_ms=1e3 * batch_size / rate,
                 latency_p95_ms=1.2e3 * batch_size / rate, inference_mfu=rate / 9e4)
    else:
        r.update(train_samples_per_s=rate, train_time_s=1e3 / rate, train_samples=1000, mfu=rate / 5e4,
                 train_tflops=rate / 100)
        if mode == "train":
            r["epoch_times_s"] = [500 / rate, 520 / rate]
    return r


def every_plot(results: list[dict], ran: set[int]) -> int:
    """Draw and check every plot the report would write for these results; how many there were."""
    rows = configurations(results)
    drawn = 0
    for field, template in PLOTS.values():
        if any(row.get(field) for row in rows):
            check_drawn(figure(rows, field, _label(template, field, rows)), ran)
            drawn += 1
    return drawn


def test_a_sweep_with_repeats_shows_every_interval_whole_or_cut_at_the_axis_with_its_end_written():
    rng = random.Random(0)
    # one batch size noisier than the rest: its interval reaches above every run, and is drawn whole
    results = [result(b, rng.choice([50.0, 80.0, 110.0]) if b == 32 else 60 + 10 * rng.random(), mode="train",
                      repeat=k) for b in range(24, 41, 2) for k in range(3)]
    assert every_plot(results, set(range(24, 41, 2))) == 3  # samples/s, epoch time, MFU
    rows = configurations(results)
    ax = figure(rows, "samples_per_s_values", "samples/s").axes[0]
    (noisy,) = [row for row in rows if row["batch_size"] == 32]
    assert ax.get_ylim()[1] >= noisy["samples_per_s_ci_high"] > 110  # the old plot ended at 1.12 x the highest run
    assert not ax.texts
    # far noisier: an interval to 170 beside runs under 80 would flatten every point; it is cut, its end written
    for r in results:
        if r["batch_size"] == 32:
            r["train_samples_per_s"] = {0: 80.0, 1: 30.0, 2: 30.0}[r["repeat"]]
    rows = configurations(results)
    ax = figure(rows, "samples_per_s_values", "samples/s").axes[0]
    (noisy,) = [row for row in rows if row["batch_size"] == 32]
    assert noisy["samples_per_s_ci_high"] > 150 and ax.get_ylim()[1] <= 1.25 * 80
    (written,) = [t.get_text() for t in ax.texts]
    assert written == f"interval to {noisy['samples_per_s_ci_high']:.0f}"


def test_a_multi_setting_sweep_draws_each_setting_apart_and_never_hides_one_behind_a_mark():
    # devices=1,2 at one batch size, a power of two: the old plot drew two red stars over both points
    results = [result(32, 100.0, devices=1), result(32, 101.0, devices=2)]
    rows = configurations(results)
    fig = figure(rows, "samples_per_s_values", "samples/s")
    points = check_drawn(fig, {32})
    (a,), (b,) = points.values()
    assert np.hypot(*(a - b)) > 12  # pixels: the two series side by side, not one over the other
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["32"]  # not 31 and 33, which never ran
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend == ["devices=1", "devices=2", "power of two (line, tick label)"]  # no "multiple of 8": none drawn
    # many settings and many batch sizes: every series its own colour and marker, ticks at what ran
    many = [result(b, 50.0 + i + b / 100, precision=p) for i, p in enumerate(["32-true", "bf16-mixed", "16-mixed",
                                                                                "bf16-true", "16-true", "64-true"])
            for b in range(500, 530)]
    assert every_plot(many, set(range(500, 530))) == 2


def test_a_compare_runs_interval_comes_from_its_rounds():
    rounds = {b: rounds_around(100.0 + b % 2, 6, seed=b) for b in (15, 16, 17)}
    results = [{**result(b, sum(v) / 6, mode="compare"), "compare_id": "c1", "round_samples_per_s": v}
               for b, v in rounds.items()]
    rows = configurations(results)
    fig = figure(rows, "samples_per_s_values", "samples/s")
    check_drawn(fig, {15, 16, 17})
    caption = fig._supxlabel.get_text().replace("\n", " ")
    assert "over its rounds" in caption and "repeats=3" not in caption
    (series,) = fig.axes[0].containers
    assert series.has_yerr  # 6 rounds per batch size: an interval, as summary.md gives one
    assert every_plot(results, {15, 16, 17}) == 2  # samples/s and MFU (its MFU has one value per run)


def test_a_merged_report_names_each_row_by_what_differs_and_not_by_what_its_mode_implies():
    throughput = [result(b, 50.0 + b, mode="throughput", trainer={"max_steps": 60, "limit_val_batches": 0},
                         model={"log_train_loss": False}) for b in (31, 32, 33)]
    inference = [result(b, 200.0 + b, mode="inference", trainer={"max_steps": -1, "limit_val_batches": None},
                        model={"log_train_loss": True}, inference={"batches": 50}) for b in (31, 32, 33)]
    for r in [*throughput, *inference]:
        r["overrides"] = [f"batch_size={r['batch_size']}", f"mode={r['mode']}"]
    merged = throughput + inference
    assert sorted(set(label_groups(merged).values())) == ["mode=inference", "mode=throughput"]
    assert every_plot(merged, {31, 32, 33}) == 3  # samples/s, MFU, latency
    # a key the user set stays in the name, even where it follows the mode
    for r in inference:
        r["overrides"].append("trainer.max_steps=-1")
    assert sorted(set(label_groups(merged).values())) == ["mode=inference trainer.max_steps=-1",
                                                          "mode=throughput trainer.max_steps=60"]


def test_a_tunes_plot_keeps_its_marks_behind_its_points():
    grid = [_arm("batch", {"batch_size": b}, rounds_around(1000.0 * (1 - abs(b - 512) / 2048), 4, seed=b))
            for b in (64, 128, 256, 384, 512, 768, 1024)]
    (one,) = tunes([*planted_tune(), *grid]).values()
    fig = tune_figure(one)
    assert len(fig.axes) == 2
    ran = {r["batch_size"] for r in one["stages"]["batch"] + one["stages"]["near"]}
    check_drawn(fig, ran)
    for ax in fig.axes:
        (series,) = ax.containers
        marks = [line for line in ax.lines if line.get_label() in ("power of two",) or
                 line.get_label().startswith("fastest")]
        assert marks and all(line.get_zorder() < series.lines[0].get_zorder() for line in marks)


@pytest.mark.parametrize("sizes", [[31, 33], [8], list(range(1, 200, 3))])
def test_ticks_are_batch_sizes_that_ran(sizes):
    results = [result(b, 40.0 + b % 7) for b in sizes]
    fig = figure(configurations(results), "samples_per_s_values", "samples/s")
    check_drawn(fig, set(sizes))
    assert len(fig.axes[0].get_xticklabels()) <= 26


def test_the_legend_lists_only_what_is_drawn():
    results = [result(b, 50.0) for b in (30, 31)]  # no power of two, no multiple of 8, one run each
    fig = figure(configurations(results), "samples_per_s_values", "samples/s")
    check_drawn(fig, {30, 31})
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["one run per batch size"]
    assert not any(isinstance(h, Line2D) and h.get_gid() in MARKS for h in fig.axes[0].lines)


def test_a_point_with_a_run_from_a_busy_machine_is_ringed_and_the_legend_says_why():
    from bsbench.report.plots import BUSY

    results = [result(b, 50.0 + b, repeat=k) for b in (30, 31, 32) for k in range(2)]
    results[2]["busy"] = True  # batch size 31's first run: the noise sentinel's mark
    fig = figure(configurations(results), "samples_per_s_values", "samples/s")
    check_drawn(fig, {30, 31, 32})
    (ring,) = [line for line in fig.axes[0].lines if line.get_gid() == BUSY]
    assert list(ring.get_xdata()) == [31] and ring.get_markerfacecolor() == "none"
    assert "ringed: a run measured on a busy machine" in " ".join(t.get_text().replace("\n", " ")
                                                                   for t in fig.legends[0].get_texts())
    results[2]["busy"] = False
    quiet = figure(configurations(results), "samples_per_s_values", "samples/s")
    assert not [line for line in quiet.axes[0].lines if line.get_gid() == BUSY]
    assert "busy" not in " ".join(t.get_text() for t in quiet.legends[0].get_texts())
