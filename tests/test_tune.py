"""mode=tune: the candidates, what the report makes of a tune's results (the advice, what matters ranked by
evidence, busy races, intervals too wide to read), and one tune through the command line that is stopped
after a stage and resumed. The decision rule itself: tests/test_tune_decision.py."""

import json
import math
import random
import re

import pytest

from bsbench.core import tuning
from bsbench.report.tune import analyse, figure, markdown, ranked, reading, snippet, tunes, write_tune
from conftest import SMOKE


def rounds_around(mean: float, n: int, seed: int, spread: float = 0.01) -> list[float]:
    rng = random.Random(seed)
    return [mean * (1 + rng.gauss(0, spread)) for _ in range(n)]


def test_the_candidates_hold_the_start_the_powers_of_two_and_the_multiples_of_8_below_the_edge():
    assert tuning.grid(6144, 5, 256) == [256, 384, 768, 1536, 3072, 6144]
    assert tuning.grid(16, 5, 16) == [2, 4, 8, 16]  # never 1: batch normalization cannot train on one image
    near = tuning.neighbourhood(3072, 6144, 256)
    assert {2048, 4096, 3064, 3080, 3071, 3073, 256} <= set(near) and max(near) <= 6144
    near = tuning.neighbourhood(3075, 3076, 256)  # not a multiple of 8: the two nearest ones; 4096 is above the edge
    assert {2048, 3072, 3075, 256} <= set(near) and 3080 not in near and 4096 not in near
    knobs = tuning.knob_settings({"batch_size": 8, "precision": "32-true", "channels_last": False,
                                  "model.fused_adam": False, "compile": False}, on_cuda=True, bf16=True, compile_=False)
    assert knobs == [{"channels_last": True}, {"precision": "16-mixed"}, {"precision": "bf16-mixed"},
                     {"model.fused_adam": True}]
    # the knobs the later stages turn on: the faster ones, and of the precisions the fastest
    effects = [{"ratio": 2.5, "ci_low": 2.4}, {"ratio": 0.2, "ci_low": 0.1}, {"ratio": 0.3, "ci_low": 0.25},
               {"ratio": 0.01, "ci_low": -0.01}]
    assert tuning.promising(knobs, effects) == {"channels_last": True, "precision": "bf16-mixed"}


def test_the_loaders_settings_are_knobs_where_the_datamodule_takes_them_and_chosen_only_together_with_workers():
    start = {"batch_size": 8, "precision": "32-true", "channels_last": False, "compile": False,
             "data.num_workers": 0, "data.pin_memory": False, "data.persistent_workers": False}
    # no workers: a few (never more than the cores this process may use); pinned memory only toward a GPU
    assert tuning.loader_knobs(start, on_cuda=False, cores=2) == [{"data.num_workers": 2}]
    assert tuning.loader_knobs(start, on_cuda=True, cores=16) == [{"data.num_workers": 4}, {"data.pin_memory": True}]
    # yours: none, or twice as many; with workers, keeping them and preparing more batches ahead
    workers = {**start, "data.num_workers": 3, "data.prefetch_factor": 2}
    assert tuning.loader_knobs(workers, on_cuda=False, cores=16) == [
        {"data.num_workers": 0}, {"data.num_workers": 6}, {"data.persistent_workers": True}, {"data.prefetch_factor": 4}]
    assert tuning.loader_knobs({"batch_size": 8}, on_cuda=True, cores=8) == []  # a datamodule that takes none
    # of one key's values the fastest clear one; settings of workers dropped where no workers were chosen
    knobs = tuning.loader_knobs(workers, on_cuda=False, cores=16)
    clear = [{"ratio": 0.3, "ci_low": 0.2}, {"ratio": 0.1, "ci_low": 0.05}, {"ratio": 0.05, "ci_low": 0.01},
             {"ratio": 0.02, "ci_low": 0.01}]
    assert tuning.promising(knobs, clear) == {"data.num_workers": 0}
    assert tuning.promising(knobs, [{}, *clear[1:]]) == {"data.num_workers": 6, "data.persistent_workers": True,
                                                         "data.prefetch_factor": 4}


def test_replayed_batches_are_the_loaders_own_read_once_and_as_many_per_epoch():
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    import lightning as L
    from bsbench.training.replay import KEPT, replay_on

    class Counted(L.LightningDataModule):
        made = 0

        def train_dataloader(self):
            Counted.made += 1
            return DataLoader(TensorDataset(torch.arange(100.0)), batch_size=4)

    data = Counted()
    replay_on(data, torch.device("cpu"))
    first, again = data.train_dataloader(), data.train_dataloader()
    assert Counted.made == 1 and len(first) == len(again) == 25  # the loader's epoch, read once
    batches = [b[0] for b in first]
    assert len(batches) == 25 and torch.equal(batches[0], torch.arange(4.0))
    assert torch.equal(batches[KEPT], batches[0]) and torch.equal(batches[KEPT - 1], torch.arange(4.0 * KEPT - 4, 4.0 * KEPT))


START = {"batch_size": 256, "precision": "bf16-mixed", "channels_last": False, "model.fused_adam": False,
         "compile": False}


def _arm(stage, setting, rates, **extra):
    config = {"tune": {"objective": "time"}, "batch_size": setting["batch_size"], "accelerator": "gpu",
              "precision": "bf16-mixed", "channels_last": False, "compile": False,
              "model": {"lr": 5e-4, "fused_adam": False}, "budget_min": 6}
    return {"status": "ok", "mode": "tune", "tune_job_id": "t1", "tune_stage": stage, "compare_setting": setting,
            "batch_size": setting["batch_size"], "round_samples_per_s": rates, "config": config,
            "tune_start": START, **extra}


def planted_tune(decision="change"):
    """An H200-like tune: channels_last 3.5x and 16-mixed +25% at your 256; with both on, 512 as fast as 511
    and 513, 256 slower; the best confirmed against your settings (or not, where `decision` is keep)."""
    base = rounds_around(2600, 8, 3)
    knobs = [_arm("knobs", {"batch_size": 256}, base),
             _arm("knobs", {"batch_size": 256, "channels_last": True}, [3.5 * v for v in rounds_around(2600, 8, 4)]),
             _arm("knobs", {"batch_size": 256, "precision": "16-mixed"}, [1.25 * v for v in rounds_around(2600, 8, 5)]),
             _arm("knobs", {"batch_size": 256, "model.fused_adam": True}, rounds_around(2600, 8, 6))]
    on = {"channels_last": True, "precision": "16-mixed"}
    near = [_arm("near", {"batch_size": b, **on}, [v * f for v in rounds_around(11000, 8, 8 + i, 0.002)])
            for i, (b, f) in enumerate(((256, 0.9), (504, 1.0), (511, 1.0005), (512, 1.001), (513, 0.9995),
                                        (520, 0.999)))]
    edge = _arm("edge", {"batch_size": 6144}, [], max_batch_size=6144, find_max_stop="memory", report_row=False)
    confirm = [_arm("confirm", {"batch_size": 256}, base),
               _arm("confirm", {"batch_size": 512, **on}, rounds_around(11000, 8, 7))]
    keep = decision == "keep"
    summary = {**_arm("confirm", {"batch_size": 256}, []), "tune_stage": None, "report_row": False,
               "tune_decision": decision, "tune_basis": "confirm", "device_name": "H200", "tune_elapsed_s": 300,
               "tune_best": {"batch_size": 256} if keep else {"batch_size": 512, **on},
               "tune_best_samples_per_s": 11000.0, "tune_best_ci": [10900.0, 11100.0],
               "tune_speedup": ({"ratio": None, "reason": "nothing measured was clearly faster"} if keep else
                                {"ratio": 3.2, "ci_low": 3.1, "ci_high": 3.3, "confidence": 0.983, "comparisons": 3}),
               "tune_resolution": {"detectable": 0.021, "budget_min": 24, "detectable_then": 0.0105} if keep else None}
    return [edge, *knobs, *near, *confirm, summary]


def test_what_matters_ranks_every_effect_with_its_interval_and_answers_the_power_of_two_question(tmp_path):
    (one,) = tunes(planted_tune()).values()
    found = analyse(one)
    whats = [row["what"] for row in found["rows"]]
    assert whats[0].startswith("channels_last=true") and whats[1].startswith("precision=16-mixed")
    assert any(w.startswith("power of two") for w in whats) and any(w.startswith("batch size: ") for w in whats)
    assert found["leader"] in (511, 512, 513) and 512 in found["indistinguishable"] and 256 not in found["indistinguishable"]
    assert found["comparisons"] == len(found["rows"]) and found["level"] > 0.95  # simultaneous over the table
    text = markdown(one)
    assert "**Change: batch_size=512 channels_last=true precision=16-mixed: +320.0% (+310.0% to +330.0%" in text
    assert "power of two" in text and "| 1 | channels_last=true (at your batch size, 256) |" in text
    assert "is among them" in text or "is a power of two" in text
    assert "precision='16-mixed'" in "\n".join(snippet(one["summary"]))
    assert "memory_format=torch.channels_last" in "\n".join(snippet(one["summary"]))
    text, files = write_tune(planted_tune(), tmp_path)
    assert {p.name for p in files} == {"tune.md", "tune.png"}
    assert "recommended: 512" in [t.get_text() for t in figure(one).legends[0].get_texts()]


def test_keep_your_settings_pastes_nothing_and_stars_nothing():
    (one,) = tunes(planted_tune("keep")).values()
    text = markdown(one)
    assert ("**Keep your settings: nothing measured was clearly faster.** Differences larger than about ±2.1% would "
            "have shown (budget_min=24 would resolve about ±1.1%)") in text
    assert "```python" not in text and "batch_size = " not in text and "Nothing to change" in text
    assert not any("recommended" in t.get_text() for t in figure(one).legends[0].get_texts())


def test_an_effect_the_intervals_do_not_resolve_never_ranks_above_a_clear_one():
    # the case: +251% with an interval from -66.7% to +3601.5%, above a clear +144% (+106% to +191%)
    rows = ranked([{"what": "wild", "ratio": 2.512, "ci_low": -0.667, "ci_high": 36.015, "detectable": 40.0},
                   {"what": "clear", "ratio": 1.44, "ci_low": 1.06, "ci_high": 1.91, "detectable": 0.3},
                   {"what": "small", "ratio": 0.02, "ci_low": 0.01, "ci_high": 0.03, "detectable": 0.01}])
    assert [r["what"] for r in rows] == ["clear", "small", "wild"]
    assert reading(rows[2]) == "not resolved: too few or too noisy rounds to show even a twofold difference"
    assert reading({**rows[2], "detectable": 0.8}) == "not resolved: only a difference beyond ±80.0% would have shown"
    assert reading(rows[0]) == "144.0% faster"


def test_a_tune_measured_on_a_busy_machine_says_so_in_its_headline_rows_and_plot():
    results = planted_tune()
    for r in results:
        if r.get("tune_stage") == "near":
            r.update(busy=True, busy_reason="other processes kept 1.9 of the machine's 2 CPU cores busy")
    (one,) = tunes(results).values()
    text = markdown(one)
    assert "*busy machine*: the near stage was measured while other processes" in text
    assert "(busy machine) |" in text
    assert any(line.get_gid() == "busy machine" for ax in figure(one).axes for line in ax.lines)


def test_an_interval_too_wide_to_read_is_cut_at_the_axis_and_its_end_written():
    results = planted_tune()
    wide = next(r for r in results if r.get("tune_stage") == "near" and r["batch_size"] == 504)
    wide["round_samples_per_s"] = [11000.0, 2000.0]  # two rounds far apart: an interval to some 10^8
    (one,) = tunes(results).values()
    ax = figure(one).axes[-1]
    assert ax.get_ylim()[1] < 11000 * 1.3  # the axis fits the points
    assert any(t.get_text().startswith("interval to ") for t in ax.texts)


def test_a_tune_interrupted_after_a_stage_resumes_from_the_next_one_within_its_budget(cli):
    # a tiny model at 32 px, 64 images at most: seconds per stage; stopped (Ctrl-C) in the batch stage's first
    # training step, once the knobs stage is done. precision=16-mixed runs as bf16-mixed on this CPU: the tune
    # starts from what runs
    args = [*SMOKE, "precision=16-mixed", "mode=tune", "budget_min=0.4", "tune.max_batch_size=32", "tune.grid_points=2",
            "compare.steps=1", "compare.warmup_steps=1", "timing.warmup_steps=1",
            "+callbacks.stop._target_=faults.StopAfterStage", "+callbacks.stop.stage=knobs"]
    proc = cli(*args)
    assert proc.returncode == 130, proc.stderr[-2000:]
    (run,) = {p.parent.parent for p in cli.outputs.rglob("knobs/done.json")}
    assert f"resume with resume={run} and the same command" in proc.stderr and "Traceback" not in proc.stderr
    assert not (run / "batch" / "done.json").exists()
    knobs = {p: json.loads(p.read_text())["compare_id"] for p in (run / "knobs").rglob("results.json")}
    spent = json.loads((run / "knobs" / "done.json").read_text())["tune_elapsed_s"]

    proc = cli(*args, f"resume={run}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert {p: json.loads(p.read_text())["compare_id"] for p in (run / "knobs").rglob("results.json")} == knobs
    for stage in ("edge", "knobs", "batch"):
        assert (run / stage / "done.json").is_file(), stage
    summary = json.loads((run / "results.json").read_text())
    assert summary["tune_start"]["precision"] == "bf16-mixed" and "runs as bf16-mixed" in proc.stderr + proc.stdout
    assert not any("precision" in json.loads(p.read_text())["compare_setting"] for p in (run / "knobs").rglob("results.json"))
    # the time the first run spent counts: the two runs together stay within the budget and its tenth of slack
    assert summary["status"] == "ok" and spent < summary["tune_elapsed_s"] <= 0.4 * 60 * 1.1
    assert "tune: stage 3 of 5" in proc.stderr + proc.stdout
    text = (run / "tune.md").read_text()
    assert "## What matters" in text and "channels_last=true" in text
    assert ("```python" in text) == (summary["tune_decision"] == "change")
    assert "# What trains fastest here" in proc.stdout


def test_a_tune_that_keeps_the_effective_batch_advises_a_micro_batch_and_accumulation_that_make_it(cli):
    # a tiny module of the user's, 32 samples per optimizer step: your batch_size=8, the tune sets the accumulation
    proc = cli(*SMOKE, "model=custom", "model._target_=toy.TinyNet", "data=synthetic", "mode=tune", "budget_min=0.2",
               "batch_size=8", "tune.effective_batch=32", "compare.steps=2", "compare.warmup_steps=1",
               "timing.warmup_steps=1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "as batch_size=8 with trainer.accumulate_grad_batches=4" in proc.stderr + proc.stdout
    results = cli.results()
    (summary,) = [r for r in results if r.get("tune_decision")]
    assert summary["tune_start"]["trainer.accumulate_grad_batches"] == 4 and summary["tune_effective_batch"] == 32
    arms = [r for r in results if r.get("tune_stage") in ("knobs", "batch", "near", "confirm") and r["round_samples_per_s"]]
    raced = {r["batch_size"] for r in arms if r["tune_stage"] == "batch"}
    assert len(raced) >= 2 and raced <= {32, 16, 8, 4, 2}
    for r in arms:  # every arm makes 32, and its rounds timed whole optimizer steps of 32 samples
        assert r["batch_size"] * r["config"]["trainer"]["accumulate_grad_batches"] == 32
        assert r["timed_samples"] == 32 * r["optimizer_steps"] > 0
    best = summary["tune_best"]
    assert best["batch_size"] * best["trainer.accumulate_grad_batches"] == 32
    text = next(cli.outputs.rglob("tune.md")).read_text()
    assert "- Optimizer step: tune.effective_batch=32 samples each: " in text
    if summary["tune_decision"] == "change":  # the snippet gives the micro-batch and its accumulation together
        assert f"accumulate_grad_batches={best['trainer.accumulate_grad_batches']})" in text
        assert f"batch_size = {best['batch_size']}  # your DataLoader's: 32 samples per optimizer step" in text


def test_an_effective_batch_your_settings_cannot_make_is_refused_in_one_sentence():
    from bsbench.core.errors import UserError
    from bsbench.job.hooks import check
    from conftest import composed

    with pytest.raises(UserError, match=r"^tune.effective_batch=100 is not made by batch_size=32 × "
                                        r"trainer.accumulate_grad_batches=1, .* \(e.g. batch_size=25\)"):
        check(composed(*SMOKE, "mode=tune", "tune.effective_batch=100"), sweep=False)
    with pytest.raises(UserError, match=r"batch_size=32 × trainer.accumulate_grad_batches=2, which the tune starts"):
        check(composed(*SMOKE, "mode=tune", "tune.effective_batch=256", "trainer.accumulate_grad_batches=2"), sweep=False)
    # one device's share of it must be an epoch's batches too: an accumulation cut short steps on fewer samples
    with pytest.raises(UserError, match=r"^tune.effective_batch=512 is larger than the 256 training images"):
        check(composed(*SMOKE, "mode=tune", "tune.effective_batch=512"), sweep=False)
    check(composed(*SMOKE, "mode=tune", "tune.effective_batch=256"), sweep=False)  # 32 × 8: the tune sets the 8
    check(composed(*SMOKE, "mode=tune", "tune.effective_batch=128", "trainer.accumulate_grad_batches=4"), sweep=False)
    # a tune that keeps no effective batch is the job it was before the setting existed (resume= finds its stages)
    from bsbench.core.config import typed
    from bsbench.job.identity import identity

    assert "tune.effective_batch" not in identity(typed(composed(*SMOKE, "mode=tune")))
    assert identity(typed(composed(*SMOKE, "mode=tune", "tune.effective_batch=256")))["tune.effective_batch"] == 256


def test_a_tune_resumed_with_another_configuration_is_refused_before_anything_is_written(tmp_path):
    from bsbench.core.errors import UserError
    from bsbench.job.hooks import check
    from conftest import composed

    run = tmp_path / "run"
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "config.yaml").write_text("batch_size: 32\nmode: tune\n")
    (run / "batch").mkdir()
    (run / "batch" / "done.json").write_text(json.dumps({"job_id": "another tune's", "stage": "batch",
                                                         "tune_procedure": tuning.PROCEDURE}))
    with pytest.raises(UserError, match="holds a tune of another configuration"):
        check(composed(*SMOKE, "mode=tune", f"resume={run}"), sweep=False)
    (run / "batch" / "done.json").write_text(json.dumps({"job_id": "another tune's", "stage": "batch"}))
    with pytest.raises(UserError, match="holds a tune of an earlier bsbench"):  # its batch race came first
        check(composed(*SMOKE, "mode=tune", f"resume={run}"), sweep=False)
    other = tmp_path / "other"
    (other / ".hydra").mkdir(parents=True)
    (other / ".hydra" / "config.yaml").write_text("mode: throughput\n")
    with pytest.raises(UserError, match="holds no mode=tune run"):
        check(composed(*SMOKE, "mode=tune", f"resume={other}"), sweep=False)
    with pytest.raises(UserError, match=f"resume={run} holds a mode=tune run; resume it with its own command, "
                                        f"mode=tune and the overrides in {run}/.hydra/overrides.yaml"):
        check(composed(*SMOKE, "mode=throughput", f"resume={run}"), sweep=False)
    with pytest.raises(UserError, match="finishes a sweep"):  # a folder of another mode
        check(composed(*SMOKE, "mode=throughput", f"resume={other}"), sweep=False)


def test_a_tune_whose_results_files_hold_anything_is_reported_without_them(tmp_path):
    results = planted_tune()
    results[5]["compare_setting"] = ["not", "a", "setting"]  # a near arm
    results[-1]["tune_best"] = "512"  # the summary
    results[4]["round_samples_per_s"] = ["a", -1]  # a knob
    text, _ = write_tune(results, tmp_path)
    assert "This tune did not finish" in text  # no usable summary: said so, not a traceback
    assert "model.fused_adam=true" not in text and "channels_last=true (at your batch size, 256)" in text


def test_tune_md_says_what_memory_the_advice_takes_and_when_compile_pays_back():
    results = planted_tune()
    for r in results:  # an H200's 140 GiB; the advised 512 at 91% of it, the others by their batch size
        if r.get("tune_stage") in ("knobs", "near", "confirm"):
            r["device_memory_gib"] = 140.0
            r["peak_memory_mib"] = 0.91 * 140 * 1024 if r["batch_size"] == 512 else 200.0 * r["batch_size"]
    base = next(r for r in results if r.get("tune_stage") == "knobs" and set(r["compare_setting"]) == {"batch_size"})
    base["first_step_time_s"] = 2.0
    compiled_rates = [1.25 * v for v in rounds_around(2600, 8, 9)]
    results.append(_arm("knobs", {"batch_size": 256, "compile": True}, compiled_rates, first_step_time_s=42.0))
    (one,) = tunes(results).values()
    text = markdown(one)
    memory = next(line for line in text.splitlines() if line.startswith("- Memory: "))
    assert memory.startswith("- Memory: of the device's 140.0 GiB: the advised setting peaked at 127.4 GiB (91%): "
                             "close to the device's edge")
    assert "; the fastest batch sizes: " in memory and "512: 127.4 GiB (91%)" in memory and "256:" not in memory
    # 40 s of compiling against the steady-state steps' saving, from the rounds' geometric means
    saved = 256 / math.exp(tuning.mean_log(base["round_samples_per_s"])) - 256 / math.exp(tuning.mean_log(compiled_rates))
    found = re.search(r"- torch.compile \(ranked below by its steady-state effect\): its first step took 40.0 s more "
                      r"than the uncompiled one's \(compiling\); each steady-state step saves [\d.]+ ms, so it pays "
                      r"back after about ([\d,]+) training steps", text)
    assert found and int(found.group(1).replace(",", "")) == math.ceil(40.0 / saved)
    assert any(row["what"].startswith("compile=true") for row in analyse(one)["rows"])
    # a compiled step no faster: it never pays back; a tune on the CPU measured no device memory
    results[-1]["round_samples_per_s"] = rounds_around(2500, 8, 10)
    for r in results:
        r.pop("peak_memory_mib", None)
    (one,) = tunes(results).values()
    text = markdown(one)
    assert "its steady-state steps are no faster: it never pays back here" in text
    assert "- Memory: not measured (peak device memory is CUDA's to count, and this tune ran on no CUDA device)." in text
