import math

import pytest

from bsbench.core.stats import compare, describe, t_quantile


@pytest.mark.parametrize("df, p, table", [(1, 0.975, 12.706), (2, 0.975, 4.303), (4, 0.975, 2.776),
                                          (10, 0.975, 2.228), (30, 0.975, 2.042), (5, 0.8, 0.920), (3, 0.025, -3.182)])
def test_t_quantiles_match_the_printed_table(df, p, table):
    assert t_quantile(p, df) == pytest.approx(table, abs=5e-4)


def test_describe_by_hand():
    stats = describe([1.0, 2.0, 3.0, 4.0, 5.0])
    # mean 3, sd sqrt(10/4) = 1.5811, half-width t(0.975, 4) * sd / sqrt(5) = 2.7764 * 0.7071 = 1.9632
    assert stats["n"] == 5 and stats["mean"] == 3.0
    assert stats["sd"] == pytest.approx(math.sqrt(2.5))
    assert (stats["ci_low"], stats["ci_high"]) == pytest.approx((3 - 1.96324, 3 + 1.96324), abs=1e-4)


def test_describe_a_single_run_has_no_spread():
    assert describe([7.0]) == {"n": 1, "mean": 7.0, "sd": None, "ci_low": None, "ci_high": None}


def test_compare_by_hand():
    # logs of a: ln(100), ln(110); of b: ln(100), ln(100): diff = ln(110)/2, se = sd(log a)/sqrt(2)
    c = compare([100.0, 110.0], [100.0, 100.0])
    diff = math.log(110) / 2 - math.log(100) / 2
    se = abs(math.log(110) - math.log(100)) / math.sqrt(2) / math.sqrt(2)
    assert c["ratio"] == pytest.approx(math.expm1(diff))
    assert c["ci_low"] == pytest.approx(math.expm1(diff - 12.7062 * se), abs=1e-4)  # df = 1 by Welch
    assert c["ci_high"] == pytest.approx(math.expm1(diff + 12.7062 * se), abs=1e-4)


def test_compare_needs_two_runs_a_side_for_an_interval():
    c = compare([105.0], [100.0, 101.0])
    assert c["ratio"] == pytest.approx(105 / 100.5 - 1) and c["ci_low"] is None and c["detectable"] is None
