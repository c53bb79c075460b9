import random

from bsbench.report.summary import configurations
from bsbench.report.verdict import comparisons, kind, verdict_markdown


def runs(rates_by_batch: dict[int, list[float]], **config) -> list[dict]:
    return [
        {"status": "ok", "batch_size": b, "repeat": i, "train_samples_per_s": rate, "train_time_s": 1000 / rate,
         "train_samples": 1000, "epoch_times_s": [1000 / rate], "config": {"precision": "32-true", **config},
         "run_dir": f"{b}/{i}", "model": "m", "world_size": 1}
        for b, rates in rates_by_batch.items() for i, rate in enumerate(rates)
    ]


def noisy(mean: float, n: int, rng: random.Random, sd: float = 0.005) -> list[float]:
    return [mean * (1 + rng.gauss(0, sd)) for _ in range(n)]


def test_kinds():
    assert kind(512) == "2^9, 8×64" and kind(504) == "8×63" and kind(513) == ""


def test_a_planted_five_percent_gap_is_found():
    rng = random.Random(1)
    found = comparisons(configurations(runs({511: noisy(1000, 5, rng), 512: noisy(1050, 5, rng),
                                             513: noisy(1000, 5, rng)})))
    assert [(c["batch_size"], c["against"]) for c in found] == [(512, 511), (512, 513)]
    for c in found:
        assert 0.03 < c["ci_low"] < 0.05 < c["ci_high"] < 0.07
        assert c["reading"].endswith("faster ({:.1%} to {:.1%})".format(c["ci_low"], c["ci_high"]))


def test_a_planted_gap_the_other_way_reads_slower():
    rng = random.Random(2)
    found = comparisons(configurations(runs({127: noisy(1000, 4, rng), 128: noisy(950, 4, rng)})))
    assert len(found) == 1 and "slower" in found[0]["reading"]


def test_identical_distributions_read_no_detectable_difference():
    rng = random.Random(3)
    found = comparisons(configurations(runs({b: noisy(1000, 5, rng) for b in (255, 256, 257)})))
    assert len(found) == 2
    assert all(c["reading"] == "no detectable difference at this precision" for c in found)
    assert all(0 < c["detectable"] < 0.05 for c in found)


def test_settings_are_compared_only_within_themselves():
    rng = random.Random(4)
    results = runs({31: noisy(1000, 3, rng), 32: noisy(1000, 3, rng)}) + \
        runs({33: noisy(2000, 3, rng)}, precision="bf16-mixed")
    found = comparisons(configurations(results))
    assert [(c["batch_size"], c["against"], c["setting"]) for c in found] == [(32, 31, "precision=32-true")]


def test_single_runs_say_so_and_the_verdict_says_how_little_it_can_tell():
    text = verdict_markdown(configurations(runs({31: [1000.0], 32: [1010.0]})))
    assert "no interval (run the sweep with repeats=3 or more)" in text
    assert "| 32 | 2^5, 8×4 | 31 | 1 vs 1 | +1.0% |" in text


def test_several_architectures_get_a_verdict_each_and_a_table_of_all():
    rng = random.Random(5)
    results = []
    for model, gain in (("resnet50", 1.05), ("vit_b_16", 1.0)):
        for r in runs({127: noisy(1000, 4, rng), 128: noisy(1000 * gain, 4, rng)}, arch=model):
            results.append({**r, "model": model, "run_dir": f"{model}/{r['run_dir']}"})
    text = verdict_markdown(configurations(results))
    resnet, vit = text.split("## resnet50")[1].split("## vit_b_16")
    assert "| 128 | 2^7, 8×16 | 127 |" in resnet and "faster" in resnet.split("## ")[0]
    assert "no detectable difference at this precision" in vit.split("## All architectures")[0]
    assert "| resnet50 | 1 | 1 | 0 | 0 |" in text and "| vit_b_16 | 1 | 0 | 0 | 1 |" in text


def test_inference_runs_are_compared_on_their_forward_passes():
    results = [{**r, "mode": "inference", "train_samples_per_s": None, "inference_samples_per_s": rate,
                "config": {**r["config"], "mode": "inference"}}
               for r in runs({31: [1000.0, 1010.0, 990.0], 32: [1500.0, 1510.0, 1490.0]})
               for rate in [r["train_samples_per_s"]]]
    (c,) = comparisons(configurations(results))
    assert c["ratio"] > 0.45 and "faster" in c["reading"]
    assert "samples/s of forward passes, `mode=inference`" in verdict_markdown(configurations(results))


def test_the_words_fit_what_ran_and_the_method_is_told_once_short():
    from bsbench.report.summary import summary_markdown

    rng = random.Random(7)
    sweep = runs({31: noisy(1000, 3, rng), 32: noisy(1000, 3, rng)})
    compared = [{**r, "compare_id": "c1", "round_samples_per_s": noisy(1000, 4, rng)}
                for r in runs({31: [1e3], 32: [1e3]})]
    (single,) = runs({30: [1000.0]})
    assert "This sweep could have detected" in verdict_markdown(configurations(sweep), results=sweep)
    assert "This comparison could have detected" in verdict_markdown(configurations(compared), results=compared)
    assert verdict_markdown(configurations([single]), results=[single]).count("This run holds no power of two") == 1
    for results in (sweep, compared, [single]):  # at most about 400 characters before the first table, a link after
        text = summary_markdown([], results, configurations(results))
        prose = text.split("\n\n", 1)[1].split("\n|", 1)[0]
        assert len(prose) <= 420 and "docs/method.md" in prose, prose
    assert summary_markdown([], [single], configurations([single])).split("\n\n")[1].startswith("1 run (1 ok) in 1 "
                                                                                                 "configuration.")


def test_numbers_read_alike_side_by_side():
    from bsbench.core.numbers import number, quantity

    assert [number(x) for x in (12345.6, 1234.5, 123.4, 12.345, 1.2345, 0.12345, 0.012345)] == [
        "12346", "1234", "123", "12.3", "1.23", "0.123", "0.0123"]
    assert quantity(281.4, "ms") == "281 ms" and quantity(227.4, "ms") == "227 ms"  # not "227.4 ms" beside "281 ms"
    assert number(52.123, like=59.2) == "52.1" and number(0.07, like=2.88) == "0.07" and quantity(45.23, "%") == "45.2%"
