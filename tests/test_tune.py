"""mode=tune: the racing rule, the candidates, what the report makes of a tune's results, and one tune
through the command line that is interrupted and resumed."""

import json
import random
import signal

import pytest

from bsbench.modes import tune
from bsbench.report.tune import analyse, markdown, snippet, tunes, write_tune
from conftest import SMOKE, wait_for


def rounds_around(mean: float, n: int, seed: int, spread: float = 0.01) -> list[float]:
    rng = random.Random(seed)
    return [mean * (1 + rng.gauss(0, spread)) for _ in range(n)]


def test_the_racing_rule_drops_only_what_is_clearly_slower():
    fast = rounds_around(100, 6, 1)
    tied = [v * (1 + d) for v, d in zip(fast, rounds_around(0.001, 6, 5, spread=10))]  # within the noise
    slow = [v * 0.8 for v in rounds_around(100, 6, 2)]  # 20% slower, round by round
    assert tune.clearly_slower([fast, tied, slow], [True, True, True]) == [2]
    # too few rounds: nothing is dropped, whatever the figures say
    assert tune.clearly_slower([fast[:2], slow[:2]], [True, True]) == []
    # the set that cannot be told apart from the fastest
    lead = tune.fastest([fast, tied, slow])
    assert sorted(tune.indistinguishable([fast, tied, slow], lead)) == [0, 1]
    # an arm dropped after three rounds is no leader and no contender, however its rounds average
    dropped = [v * 2 for v in fast[:3]]
    assert tune.fastest([fast, tied, dropped]) in (0, 1) and tune.contenders([fast, tied, dropped]) == [1 - lead]


def test_the_candidates_hold_the_start_the_powers_of_two_and_the_multiples_of_8_below_the_edge():
    assert tune.grid(6144, 5, 256) == [256, 384, 768, 1536, 3072, 6144]
    assert tune.grid(16, 5, 16) == [2, 4, 8, 16]  # never 1: batch normalization cannot train on one image
    near = tune.neighbourhood(3072, 6144, 256)
    assert {2048, 4096, 3064, 3080, 3071, 3073, 256} <= set(near) and max(near) <= 6144
    near = tune.neighbourhood(3075, 3076, 256)  # not a multiple of 8: the two nearest ones; 4096 is above the edge
    assert {2048, 3072, 3075, 256} <= set(near) and 3080 not in near and 4096 not in near
    knobs = tune.knob_settings({"batch_size": 8, "precision": "32-true", "channels_last": False,
                                "model.fused_adam": False, "compile": False}, on_cuda=True, bf16=True, compile_=False)
    assert knobs == [{"channels_last": True}, {"precision": "16-mixed"}, {"precision": "bf16-mixed"},
                     {"model.fused_adam": True}]
    # the clearly faster knobs together, and of the precisions the fastest
    effects = [{"ratio": 2.5, "ci_low": 2.4}, {"ratio": 0.2, "ci_low": 0.1}, {"ratio": 0.3, "ci_low": 0.25},
               {"ratio": 0.01, "ci_low": -0.01}]
    assert tune.combination(knobs, effects) == {"channels_last": True, "precision": "bf16-mixed"}


def _arm(stage, setting, rates, **extra):
    config = {"tune": {"objective": "time"}, "batch_size": setting["batch_size"], "accelerator": "gpu",
              "precision": "bf16-mixed", "channels_last": False, "compile": False,
              "model": {"lr": 5e-4, "fused_adam": False}, "budget_min": 6}
    return {"status": "ok", "mode": "tune", "tune_job_id": "t1", "tune_stage": stage, "compare_setting": setting,
            "batch_size": setting["batch_size"], "round_samples_per_s": rates, "config": config,
            "tune_start": {"batch_size": 256, "precision": "bf16-mixed", "channels_last": False,
                           "model.fused_adam": False, "compile": False}, **extra}


def planted_tune():
    """An H200-like tune: channels_last 3.5x, 16-mixed +25%, 512 as fast as 511 and 513, 256 slower."""
    base = rounds_around(2600, 8, 3)
    near = [_arm("near", {"batch_size": b}, [v * f for v in base])
            for b, f in ((256, 0.9), (504, 1.0), (511, 1.0005), (512, 1.001), (513, 0.9995), (520, 0.999))]
    knobs = [_arm("knobs", {"batch_size": 512}, base),
             _arm("knobs", {"batch_size": 512, "channels_last": True}, [3.5 * v for v in rounds_around(2600, 8, 3, 0.02)]),
             _arm("knobs", {"batch_size": 512, "precision": "16-mixed"}, [1.25 * v for v in base]),
             _arm("knobs", {"batch_size": 512, "model.fused_adam": True}, [v * 1.0001 for v in base])]
    edge = _arm("edge", {"batch_size": 6144}, [], max_batch_size=6144, find_max_stop="memory", report_row=False)
    summary = {**_arm("confirm", {"batch_size": 512}, []), "tune_stage": None, "report_row": False,
               "tune_best": {"batch_size": 512, "channels_last": True, "precision": "16-mixed"},
               "tune_best_samples_per_s": 11000.0, "tune_best_ci": [10900.0, 11100.0], "device_name": "H200",
               "tune_speedup": {"ratio": 3.6, "ci_low": 3.5, "ci_high": 3.7}, "tune_elapsed_s": 300}
    return [edge, *near, *knobs, summary]


def test_what_matters_ranks_every_effect_with_its_interval_and_answers_the_power_of_two_question(tmp_path):
    (one,) = tunes(planted_tune()).values()
    found = analyse(one)
    whats = [row["what"] for row in found["rows"]]
    assert whats[0].startswith("channels_last=true") and whats[1].startswith("precision=16-mixed")
    assert any(w.startswith("power of two") for w in whats) and any(w.startswith("batch size: ") for w in whats)
    assert found["leader"] in (511, 512, 513) and 512 in found["indistinguishable"] and 256 not in found["indistinguishable"]
    text = markdown(one)
    assert "power of two" in text and "| 1 | channels_last=true (at 512) |" in text
    assert "is among them" in text or "is a power of two" in text
    assert "precision='16-mixed'" in "\n".join(snippet(one["summary"]))
    assert "memory_format=torch.channels_last" in "\n".join(snippet(one["summary"]))
    text, files = write_tune(planted_tune(), tmp_path)
    assert {p.name for p in files} == {"tune.md", "tune.png"}


def test_a_tune_interrupted_after_a_stage_resumes_from_the_next_one(cli):
    # a tiny model at 32 px, 64 images at most: seconds per stage
    args = [*SMOKE, "mode=tune", "budget_min=0.1", "tune.max_batch_size=32", "tune.grid_points=2",
            "compare.steps=1", "compare.warmup_steps=1", "timing.warmup_steps=1"]
    proc = cli.start(*args)
    wait_for(lambda: next(cli.outputs.rglob("batch/done.json"), None) is not None or proc.poll() is not None)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    if proc.returncode == 0:
        pytest.skip("the tune finished before it could be interrupted")
    assert proc.returncode == 130, err[-2000:]
    (run,) = {p.parent.parent for p in cli.outputs.rglob("batch/done.json")}
    assert f"resume with resume={run} and the same command" in err and "Traceback" not in err
    batch = {p: json.loads(p.read_text())["compare_id"] for p in (run / "batch").rglob("results.json")}

    proc = cli(*args, f"resume={run}", "budget_min=0.3")  # a budget is not what a tune is: the same tune, more time
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert {p: json.loads(p.read_text())["compare_id"] for p in (run / "batch").rglob("results.json")} == batch
    for stage in ("edge", "batch", "near", "knobs"):
        assert (run / stage / "done.json").is_file(), stage
    summary = json.loads((run / "results.json").read_text())
    assert summary["status"] == "ok" and summary["tune_best"]["batch_size"] <= 32
    text = (run / "tune.md").read_text()
    assert "## What matters" in text and "channels_last=true" in text and "power of two" in text
    assert "```python" in text and (run / "tune.png").is_file()
    assert "# What trains fastest here" in proc.stdout


def test_a_tune_resumed_with_another_configuration_is_refused_before_anything_is_written(tmp_path):
    from bsbench.core.errors import UserError
    from bsbench.job.hooks import check
    from conftest import composed

    run = tmp_path / "run"
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "config.yaml").write_text("batch_size: 32\nmode: tune\n")
    (run / "batch").mkdir()
    (run / "batch" / "done.json").write_text(json.dumps({"job_id": "another tune's", "stage": "batch"}))
    with pytest.raises(UserError, match="holds a tune of another configuration"):
        check(composed(*SMOKE, "mode=tune", f"resume={run}"), sweep=False)
    other = tmp_path / "other"
    (other / ".hydra").mkdir(parents=True)
    (other / ".hydra" / "config.yaml").write_text("mode: throughput\n")
    with pytest.raises(UserError, match="holds no mode=tune run"):
        check(composed(*SMOKE, "mode=tune", f"resume={other}"), sweep=False)
    with pytest.raises(UserError, match="finishes a sweep"):
        check(composed(*SMOKE, "mode=throughput", f"resume={run}"), sweep=False)


def test_a_tune_whose_results_files_hold_anything_is_reported_without_them(tmp_path):
    results = planted_tune()
    results[1]["compare_setting"] = ["not", "a", "setting"]  # a near arm
    results[-1]["tune_best"] = "512"  # the summary
    results[-2]["round_samples_per_s"] = ["a", -1]  # a knob
    text, _ = write_tune(results, tmp_path)
    assert "This tune did not finish" in text  # no usable summary: said so, not a traceback
    assert "model.fused_adam=true" not in text and "channels_last=true (at 512)" in text
