"""mode=compare (batch sizes measured against each other in one process, paired round by round) and
adaptive stopping (target_ci, budget_min), for compare runs and for sweeps of separate jobs."""

import json
import math
import random
import re

import pytest

from bsbench.core import stopping
from bsbench.core.order import round_order
from bsbench.core.errors import UserError
from bsbench.modes import results_of
from bsbench.job.hooks import check
from bsbench.core.stats import compare, half_width, paired
from bsbench.report.summary import configurations
from bsbench.report.verdict import comparisons, neighbour_pairs, verdict_markdown
from conftest import SMOKE, composed

# three batch sizes around a power of two, a few short rounds: seconds on a CPU
COMPARE = [*SMOKE, "mode=compare", "compare.batch_sizes=[15,16,17]", "compare.steps=2", "compare.warmup_steps=1",
           "timing.warmup_steps=1"]


def test_a_compare_run_writes_one_result_per_batch_size_and_a_paired_verdict(cli):
    # a target any two rounds reach, trusted only once every batch size ran in every place of the order:
    # 2 x 3 = 6 rounds
    proc = cli(*COMPARE, "compare.rounds=20", "target_ci=0.99")
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = {r["batch_size"]: r for r in cli.results()}
    assert sorted(results) == [15, 16, 17]
    assert len({r["compare_id"] for r in results.values()}) == 1  # one measurement, three results
    for b, r in results.items():
        assert r["status"] == "ok" and r["mode"] == "compare" and r["config"]["batch_size"] == b
        assert r["run_dir"].endswith(f"/bs{b}")
        assert len(r["round_samples_per_s"]) == 6 and all(v > 0 for v in r["round_samples_per_s"])
        assert r["timed_steps"] == 6 * 2 and r["warmup_steps"] == 1
        assert r["compare_stop"]["stop"] == "target_ci" and r["compare_stop"]["rounds"] == 6
        assert r["train_flops_per_sample"] > 0 and r["train_tflops"] > 0  # the FLOP fields, per batch size
    # a single compare run prints and writes its report: the verdict pairs the rounds
    verdict_path = next(p for p in cli.outputs.rglob("verdict.md"))
    verdict = verdict_path.read_text()
    for other in (15, 17):
        assert f"| 16 | 2^4, 8×2 | {other} | 6 rounds, paired |" in verdict
    assert "Stopped on target after 6 of at most 20 rounds" in verdict
    line = next(line for line in proc.stdout.splitlines() if line.startswith("compare 15, 16, 17"))
    assert "16 vs 15 " in line and "16 vs 17 " in line and "6 rounds, on target" in line
    assert "# Are powers of two (or multiples of 8) faster here?" in proc.stdout
    assert proc.stderr == ""


def test_a_compare_run_stops_before_a_round_that_would_pass_its_budget(cli):
    proc = cli(*COMPARE, "compare.rounds=20", "target_ci=0.001", "budget_min=0.0001")
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = cli.results()
    assert len(results) == 3
    for r in results:  # one round, then the budget: a round takes longer than 6 ms
        assert r["compare_stop"]["stop"] == "budget_min" and r["compare_stop"]["rounds"] == 1
        assert len(r["round_samples_per_s"]) == 1
    verdict = next(cli.outputs.rglob("verdict.md")).read_text()
    assert "Stopped by the budget after 1 of at most 20 rounds" in verdict and "target_ci=0.001 was not reached" in verdict
    assert "one round: no interval" in verdict


def test_a_sweep_of_separate_jobs_stops_on_target_between_rounds(cli):
    # 7 timed steps a run: on a loaded machine (CI with other work), 3 scattered too widely for even +-99%
    proc = cli("-m", "batch_size=15,16", "repeats=8", "target_ci=0.99", *SMOKE, "mode=throughput",
               "trainer.max_steps=8", "timing.warmup_steps=1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = cli.results()
    # 3 rounds are the least a target is trusted from; the other 5 rounds' jobs never ran
    assert sorted((r["batch_size"], r["repeat"]) for r in results) == [(b, r) for b in (15, 16) for r in range(3)]
    stop = json.loads((cli.sweep_dir() / "stop.json").read_text())
    assert stop["stop"] == "target_ci" and stop["rounds"] == 3 and stop["cap"] == 8
    verdict = (cli.sweep_dir() / "verdict.md").read_text()
    assert "Stopped on target after 3 of at most 8 rounds of the sweep in " in verdict
    assert "10 jobs not run; resume=" in proc.stdout


def test_a_sweep_stopped_by_its_budget_resumes_to_its_cap(cli):
    common = ["-m", "batch_size=15,16", "repeats=2", *SMOKE, "mode=throughput", "trainer.max_steps=3",
              "timing.warmup_steps=1"]
    proc = cli(*common, "budget_min=0.0001")
    assert proc.returncode == 0, proc.stderr[-3000:]
    sweep = cli.sweep_dir()
    assert sorted(r["repeat"] for r in cli.results()) == [0, 0]  # one round, then the budget
    assert json.loads((sweep / "stop.json").read_text())["stop"] == "budget_min"
    proc = cli(*common, f"resume={sweep}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(r["repeat"] for r in cli.results()) == [0, 0, 1, 1]
    assert not (sweep / "stop.json").exists()  # the resumed launch ran to its cap, and its verdict says no stop
    assert "Stopped" not in (sweep / "verdict.md").read_text()


def test_a_compare_run_with_two_ddp_ranks_stops_on_both_together(cli):
    # rank 0 decides when the rounds end and the other rank follows: a rank that decided alone would hang
    proc = cli(*COMPARE, "compare.rounds=20", "target_ci=0.99", "devices=2", "strategy=ddp",
               "compare.batch_sizes=[7,8]")
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = cli.results()
    assert sorted(r["batch_size"] for r in results) == [7, 8]
    for r in results:
        assert r["world_size"] == 2 and r["global_batch_size"] == 2 * r["batch_size"]
        assert r["compare_stop"] == {**r["compare_stop"], "stop": "target_ci", "rounds": 4}


@pytest.mark.parametrize("setting, message", [
    ("compare.batch_sizes=[30,31]", "compare.batch_sizes=[30,31] holds no power of two or multiple of 8"),
    ("compare.batch_sizes=[32]", "compare.batch_sizes=[32] needs two or more different positive batch sizes"),
    ("compare.batch_sizes=[32,32]", "needs two or more different positive batch sizes"),
    ("compare.batch_sizes=[255,256,257]", "compare.batch_sizes holds 257, which is larger than the 256 training images"),
    ("compare.rounds=1", "compare.rounds=1 is not at least 2"),
    ("target_ci=2", "target_ci=2 is not a relative half-width between 0 and 1"),
    ("budget_min=0", "budget_min=0 is not greater than 0"),
    ("strategy=ddp_spawn", "which strategy=ddp_spawn cannot"),
])
def test_a_compare_mistake_is_named_before_anything_runs(setting, message):
    with pytest.raises(UserError, match=re.escape(message)):
        check(composed(*SMOKE, "mode=compare", "compare.batch_sizes=[15,16]", setting), sweep=False)


def test_adaptive_stopping_of_a_sweep_needs_rounds():
    with pytest.raises(UserError, match="target_ci=0.05 needs repeats to reach it"):
        check(composed(*SMOKE, "target_ci=0.05"), sweep=True)
    with pytest.raises(UserError, match="use order=interleaved or order=shuffled"):
        check(composed(*SMOKE, "repeats=5", "order=grid", "budget_min=5"), sweep=True)


def test_rounds_put_every_batch_size_in_every_place_equally_often():
    for items in (["a", "b"], ["a", "b", "c"], [1, 2, 3, 4]):
        k = len(items)
        orders = [round_order(items, r) for r in range(2 * k)]
        assert all(sorted(o) == sorted(items) for o in orders)
        for item in items:
            assert sorted(o.index(item) for o in orders) == sorted(list(range(k)) * 2)
    assert ["".join(round_order("ab", r)) for r in range(4)] == ["ab", "ba", "ba", "ab"]  # ABBA


def test_the_paired_interval_is_the_t_interval_of_the_log_ratios():
    a, b = [110.0, 104.0, 121.0, 99.0], [100.0, 100.0, 110.0, 95.0]
    logs = [math.log(x / y) for x, y in zip(a, b)]
    mean = sum(logs) / 4
    sd = math.sqrt(sum((v - mean) ** 2 for v in logs) / 3)
    half = 3.182446305284263 * sd / 2  # t(0.975, 3) * sd / sqrt(4)
    c = paired(a, b)
    assert c["ratio"] == pytest.approx(math.expm1(mean))
    assert c["ci_low"] == pytest.approx(math.expm1(mean - half))
    assert c["ci_high"] == pytest.approx(math.expm1(mean + half))
    assert half_width(c) == pytest.approx((math.expm1(mean + half) - math.expm1(mean - half)) / 2)
    assert paired(a[:1], b[:1])["ci_low"] is None


def test_pairing_sees_through_drift_that_hides_a_difference_from_separate_runs():
    # the machine drifts by ±20% between rounds; 32 is 3% faster than 31 within every round
    rng = random.Random(1)
    drift = [1 + 0.2 * rng.uniform(-1, 1) for _ in range(12)]
    noise = [1 + 0.002 * rng.uniform(-1, 1) for _ in range(12)]
    rates = {31: [100 * d for d in drift], 32: [103 * d * e for d, e in zip(drift, noise)]}
    results = [{"status": "ok", "batch_size": b, "mode": "compare", "compare_id": "c1", "round_samples_per_s": v,
                "train_samples_per_s": sum(v) / len(v), "config": {"mode": "compare"}, "run_dir": f"x/bs{b}"}
               for b, v in rates.items()]
    (found,) = comparisons(configurations(results))
    assert found["paired"] and found["ci_low"] > 0.02 and found["ci_high"] < 0.04
    assert "faster" in found["reading"]
    welch = compare(rates[32], rates[31])  # the same numbers as separate runs: the drift drowns it
    assert welch["ci_low"] < 0 < welch["ci_high"]


def test_a_compare_job_that_did_not_finish_leaves_a_result_per_arm():
    result = {"status": "interrupted", "mode": "compare", "batch_size": 256, "run_dir": "/r/job",
              "config": {"batch_size": 256, "compare": {"batch_sizes": [511, 512, 513]}}}
    split = results_of(result)
    assert [(r["batch_size"], r["status"], r["run_dir"], r["config"]["batch_size"]) for r in split] == [
        (b, "interrupted", f"/r/job/bs{b}", b) for b in (511, 512, 513)]
    assert results_of({"mode": "throughput", "batch_size": 8}) == [{"mode": "throughput", "batch_size": 8}]


def test_stopping_decides_target_first_then_cap_then_budget():
    decide = stopping.decide
    kwargs = dict(target_ci=0.01, budget_min=1.0, elapsed_s=10.0, round_s=5.0, min_rounds=4)
    assert decide([0.005, 0.009], 4, 10, **kwargs) == "target_ci"
    assert decide([0.005, 0.009], 3, 10, **kwargs) is None  # too few rounds to trust it
    assert decide([0.005, None], 6, 10, **kwargs) is None  # a comparison without an interval
    assert decide([0.005, 0.02], 10, 10, **kwargs) == "cap"
    assert decide([0.005, 0.02], 5, 10, **{**kwargs, "elapsed_s": 56.0}) == "budget_min"  # 56 + 5 > 60
    assert decide([0.005, 0.02], 5, 10, **{**kwargs, "target_ci": None, "budget_min": None}) is None


def test_the_verdict_compares_each_power_of_two_with_its_neighbours():
    assert neighbour_pairs([511, 513, 512]) == [(512, 511), (512, 513)]
    assert neighbour_pairs([15, 16, 17, 24]) == [(16, 15), (16, 17), (24, 17)]
    assert "no power of two" in verdict_markdown([])


def test_the_verdict_tells_each_compare_runs_stop_by_its_setting():
    from bsbench.report.write import stops

    stop = {"stop": "cap", "rounds": 6, "cap": 6, "target_ci": 0.01, "budget_min": None, "elapsed_s": 6.0,
            "widest_half_width": 0.14}
    results = [{"status": "ok", "batch_size": b, "compare_id": f"c-{precision}", "compare_batch_sizes": [15, 16],
                "compare_stop": stop, "config": {"mode": "compare", "precision": precision}, "run_dir": f"x/{b}"}
               for precision in ("32-true", "bf16-mixed") for b in (15, 16)]
    told = verdict_markdown(configurations(results), stops([], results))
    for precision in ("32-true", "bf16-mixed"):  # once per compare run, not once per batch size
        assert told.count(f"compare 15, 16 (precision={precision}): Ran all 6 of at most 6 rounds") == 1


def test_a_full_disk_loses_no_compared_batch_size(cli):
    # the first result written fails: the terminal gets the whole comparison, every batch size's result as its
    # results.json would have been (its own batch size at the top, not the config's default)
    proc = cli(*COMPARE, "compare.rounds=2", "target_ci=null", "+callbacks.fault._target_=faults.DiskFullAtRecord",
               "+callbacks.fault.batch_size=15")
    assert proc.returncode == 1
    start = next(i for i, line in enumerate(proc.stderr.splitlines()) if line.startswith("["))
    kept, _ = json.JSONDecoder().raw_decode("\n".join(proc.stderr.splitlines()[start:]))
    assert [(r["batch_size"], len(r["round_samples_per_s"])) for r in kept] == [(15, 2), (16, 2), (17, 2)]
    assert [r["run_dir"].rsplit("/", 1)[-1] for r in kept] == ["bs15", "bs16", "bs17"]
    last = proc.stderr.splitlines()[-1]
    assert "results.json (No space left on device); the run stops; the results above are their only copy;" in last
    assert "sweep" not in last  # one run


def test_settings_crossed_with_batch_sizes_get_a_folder_a_config_and_a_verdict_each(cli):
    proc = cli(*COMPARE, "compare.batch_sizes=[15,16]", "compare.settings=[{channels_last:false},{channels_last:true}]",
               "compare.rounds=3", "target_ci=null")
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = {r["run_dir"].rsplit("/", 1)[-1]: r for r in cli.results()}
    assert sorted(results) == ["bs15_channels_last-false", "bs15_channels_last-true", "bs16_channels_last-false",
                               "bs16_channels_last-true"]
    for name, r in results.items():
        channels_last = name.endswith("true")
        assert r["channels_last"] is channels_last and r["config"]["channels_last"] is channels_last
        assert r["compare_setting"] == {"batch_size": r["batch_size"], "channels_last": channels_last}
        assert len(r["round_samples_per_s"]) == 3 and len({x["compare_id"] for x in results.values()}) == 1
    verdict = next(cli.outputs.rglob("verdict.md")).read_text()
    # each setting against the first at the same batch size, with its interval, in words and as a row
    assert re.search(r"- batch_size=16 channels_last=true: .*\(.*% to .*%\) than batch_size=16 channels_last=false\.",
                     verdict)
    assert "| batch_size=15 channels_last=true | batch_size=15 channels_last=false | 3 rounds, paired |" in verdict
    # and the power of two against its neighbour within each setting
    assert "| 16 | 2^4, 8×2 | 15 | 3 rounds, paired |" in verdict
    line = next(line for line in proc.stdout.splitlines() if line.startswith("compare batch_size=15"))
    assert "batch_size=15 channels_last=true vs batch_size=15 channels_last=false" in line


def test_a_precision_and_a_matmul_precision_compared_in_one_process_leak_into_nothing(tmp_path):
    import torch

    from bsbench.job.run import attempt
    from bsbench.report.verdict import setting_comparisons
    from conftest import job_config

    before = torch.get_float32_matmul_precision()
    cfg = job_config(tmp_path, "mode=compare", "compare.settings=[{precision:32-true},"
                     "{precision:bf16-mixed,matmul_precision:medium},{precision:32-true,model.fused_adam:true}]",
                     "batch_size=8", "compare.rounds=3", "compare.steps=1", "compare.warmup_steps=0",
                     "timing.warmup_steps=1", "target_ci=null")
    result = attempt(cfg)
    assert torch.get_float32_matmul_precision() == before
    arms = results_of({**result, "run_dir": str(tmp_path)})
    assert [(a["precision"], a["precision_used"], a["float32_matmul_precision"], a["fused_adam"]) for a in arms] == [
        ("32-true", "32-true", before, False), ("bf16-mixed", "bf16-mixed", "medium", False),
        ("32-true", "32-true", before, True)]
    assert [a["config"]["model"]["fused_adam"] for a in arms] == [False, False, True]
    assert [a["compile_time_s"] for a in arms] == [None, None, None]  # no arm compiled
    found = setting_comparisons(arms)
    assert [(c["setting"], c["against"]) for c in found] == [
        ("precision=bf16-mixed matmul_precision=medium", "precision=32-true"),
        ("precision=32-true model.fused_adam=true", "precision=32-true")]
    assert all(c["ci_low"] is not None and c["pairs"] == 3 for c in found)


@pytest.mark.parametrize("settings, message", [
    ("[{channels_last:false},{warmup:3}]", "compare.settings[1] holds warmup, which compare cannot vary; use keys "
     "from: batch_size, precision, channels_last, matmul_precision, model.fused_adam, compile."),
    ("[{cudnn_benchmark:false},{cudnn_benchmark:true}]", "compare.settings cannot vary cudnn_benchmark: cuDNN's plan "
     "cache is process-wide"),
    ("[{channels_last:false},{channels_last:maybe}]", "compare.settings: channels_last=maybe is not true or false"),
    ("[{precision:32-true},{precision:bf17}]", "the setting batch_size=32 precision=bf17: precision=bf17 is not a "
     "Lightning precision"),
    ("[{channels_last:true},{channels_last:true}]", "needs two or more different settings"),
    ("[{batch_size:300},{batch_size:32}]", "the setting batch_size=300: batch_size=300 is larger than the 256 training"),
    ("[16,32]", "compare.settings[0]=16 is not a setting, the keys it changes as a mapping; use e.g. "
     "compare.settings=[{channels_last:false},{channels_last:true}], or compare.batch_sizes=[...]"),
])
def test_a_setting_compare_cannot_run_is_named_in_one_line(settings, message):
    with pytest.raises(UserError, match=re.escape(message)):
        check(composed(*SMOKE, "mode=compare", f"compare.settings={settings}"), sweep=False)
