"""The statistics a verdict and a tune need: mean, standard deviation, Student-t intervals, Welch's
comparison of two groups of runs, and the arms of a race compared in its shared rounds (`Race`: a
two-way layout, arm x round, on log rates). Written here rather than taken from scipy, which is large
and absent from many GPU images, for the one distribution bsbench needs. Stdlib only."""

import math
import operator
from functools import lru_cache
from statistics import fmean, stdev


def _beta_continued_fraction(a: float, b: float, x: float) -> float:
    """Lentz's evaluation of the continued fraction for the incomplete beta function."""
    tiny, eps = 1e-300, 1e-15
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    result = d
    for m in range(1, 500):
        for numerator in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                          -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            result *= c * d
        if abs(c * d - 1.0) < eps:
            break
    return result


def regularized_beta(a: float, b: float, x: float) -> float:
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _beta_continued_fraction(a, b, x) / a
    return 1.0 - front * _beta_continued_fraction(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    tail = 0.5 * regularized_beta(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t > 0 else tail


@lru_cache(maxsize=4096)  # a race asks for the same few quantiles every round
def t_quantile(p: float, df: float) -> float:
    """The p-quantile of Student's t with df (possibly fractional) degrees of freedom."""
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < p:
        lo, hi = hi, hi * 2.0
    for _ in range(200):
        mid = (lo + hi) / 2.0
        lo, hi = (mid, hi) if t_cdf(mid, df) < p else (lo, mid)
        if hi - lo < 1e-12:
            break
    return (lo + hi) / 2.0


def describe(values: list[float], confidence: float = 0.95, log: bool = False) -> dict:
    """n, mean, sample standard deviation and the t interval of the mean (None where n is too small).
    With `log` (positive quantities: times, rates), the mean is the geometric mean and the interval
    is the t interval on the log scale, as the verdict compares them: never below zero, however few
    and scattered the runs; the standard deviation stays in the values' own unit."""
    n = len(values)
    if n == 0:
        return {"n": 0, "mean": None, "sd": None, "ci_low": None, "ci_high": None}
    if log and all(v > 0 for v in values):
        logs = describe([math.log(v) for v in values], confidence)
        return {"n": n, "mean": math.exp(logs["mean"]), "sd": stdev(values) if n > 1 else None,
                "ci_low": math.exp(logs["ci_low"]) if n > 1 else None,
                "ci_high": math.exp(logs["ci_high"]) if n > 1 else None}
    mean = fmean(values)
    if n == 1:
        return {"n": 1, "mean": mean, "sd": None, "ci_low": None, "ci_high": None}
    sd = stdev(values)
    half = t_quantile(0.5 + confidence / 2.0, n - 1) * sd / math.sqrt(n)
    return {"n": n, "mean": mean, "sd": sd, "ci_low": mean - half, "ci_high": mean + half}


def compare(a: list[float], b: list[float], confidence: float = 0.95, power: float = 0.8) -> dict:
    """How much larger a's values are than b's, as a ratio: Welch's interval on the logarithms (so
    the answer is relative and symmetric), and the smallest relative difference these runs could
    have detected at this confidence and power. Needs two runs on each side."""
    result = {"ratio": fmean(a) / fmean(b) - 1.0, "ci_low": None, "ci_high": None, "detectable": None}
    if len(a) < 2 or len(b) < 2:
        return result
    la, lb = [math.log(v) for v in a], [math.log(v) for v in b]
    va, vb = stdev(la) ** 2 / len(la), stdev(lb) ** 2 / len(lb)
    se = math.sqrt(va + vb)
    diff = fmean(la) - fmean(lb)
    if se == 0.0:
        return {**result, "ratio": math.expm1(diff), "ci_low": math.expm1(diff), "ci_high": math.expm1(diff),
                "detectable": 0.0}
    df = (va + vb) ** 2 / (va**2 / (len(la) - 1) + vb**2 / (len(lb) - 1))  # Welch-Satterthwaite
    t = t_quantile(0.5 + confidence / 2.0, df)
    return {
        "ratio": math.expm1(diff),
        "ci_low": math.expm1(diff - t * se),
        "ci_high": math.expm1(diff + t * se),
        "detectable": math.expm1((t + t_quantile(power, df)) * se),
    }


def paired(a: list[float], b: list[float], confidence: float = 0.95, power: float = 0.8) -> dict:
    """How much larger a's values are than b's when they were measured in pairs (a[i] beside b[i], in one
    round of one process): the t interval of the mean log ratio of the pairs, as a relative difference,
    and the smallest relative difference these pairs could have detected. Drift between rounds cancels
    within each pair, which is why pairs resolve smaller differences than Welch's comparison of
    separate runs. Needs two pairs for an interval."""
    logs = [math.log(x / y) for x, y in zip(a, b)]
    n = len(logs)
    result = {"ratio": math.expm1(fmean(logs)) if logs else None, "ci_low": None, "ci_high": None,
              "detectable": None, "pairs": n}
    if n < 2:
        return result
    mean, se = fmean(logs), stdev(logs) / math.sqrt(n)
    t = t_quantile(0.5 + confidence / 2.0, n - 1)
    return {**result, "ci_low": math.expm1(mean - t * se), "ci_high": math.expm1(mean + t * se),
            "detectable": math.expm1((t + t_quantile(power, n - 1)) * se)}


def half_width(c: dict) -> float | None:
    """Half the width of a comparison's 95% interval, as a relative difference (0.01: about ±1%)."""
    return None if c.get("ci_low") is None else (c["ci_high"] - c["ci_low"]) / 2.0


# An interval whose ends are more than this factor apart (on the ratio, 1 + the relative difference)
# tells a reader nothing they can use ("-66.7% to +3601.5%"): it is shown as "not resolved".
READABLE = 4.0


def readable(c: dict) -> bool:
    """Whether a comparison's interval is narrow enough to be read as a range (see READABLE)."""
    if c.get("ci_low") is None or c.get("ci_high") is None:
        return False
    return c["ci_low"] > -1 and (1 + c["ci_high"]) / (1 + c["ci_low"]) <= READABLE


def resolved(c: dict) -> bool:
    """Whether a comparison's interval excludes zero: a difference the data show, in one direction."""
    return c.get("ci_low") is not None and (c["ci_low"] > 0 or c["ci_high"] < 0)


def simultaneous(confidence: float, comparisons: int) -> float:
    """The confidence of each of `comparisons` intervals that hold together at `confidence` (Bonferroni):
    of a dozen comparisons at 95% each, one looks different by chance about half the time; at this
    level, any does in at most 1 - `confidence` of the measurements."""
    return 1 - (1 - confidence) / max(1, comparisons)


class Race:
    """Arms measured in the same rounds (a mode=compare or mode=tune race: arm i's value r was measured in
    round r beside every other arm's value r; an arm that left the race early has fewer). On log values
    the layout is two-way, arm x round: a round's shared conditions (the machine's state while it ran)
    are one effect, each arm's speed another, and what is left is the noise, the same for every arm. So
    the noise is estimated from all arms together, with (arms - 1)(rounds - 1) degrees of freedom, where
    one pair's rounds alone give rounds - 1 (two rounds of six arms: 5, not 1; Student's t at 95% is 2.57
    at 5 and 12.7 at 1). The estimate comes from the largest block of arms that share their first rounds
    (the arms still in the race, or those and the ones that left, over fewer rounds), whichever gives the
    most degrees of freedom; a comparison of two arms is their paired mean log ratio over the rounds they
    share, with that noise."""

    def __init__(self, values: list[list[float]]):
        self.logs = [list(map(math.log, arm)) if arm and min(arm) > 0 else [] for arm in values]
        self.sums = [sum(arm) for arm in self.logs]
        self.variance, self.df = self._noise()

    def _noise(self) -> tuple[float | None, int]:
        lengths = sorted({len(arm) for arm in self.logs if arm}, reverse=True)
        best, block = 0, None
        for rounds in lengths:
            k = sum(len(arm) >= rounds for arm in self.logs)
            if (k - 1) * (rounds - 1) > best:
                best, block = (k - 1) * (rounds - 1), [arm[:rounds] for arm in self.logs if len(arm) >= rounds]
        if block is None:
            return None, 0
        k, r = len(block), len(block[0])
        # the residual sum of squares of the two-way layout, from its sums: within-cell minus arm and round
        # effects (log rates of a few percent of noise around values near 5-10: far from cancelling in floats)
        squares = sum(sum(map(operator.mul, arm, arm)) for arm in block)
        arm_sums = [sum(arm) for arm in block]
        round_sums = [sum(column) for column in zip(*block)]
        total = sum(arm_sums)
        residual = (squares - sum(map(operator.mul, arm_sums, arm_sums)) / r
                    - sum(map(operator.mul, round_sums, round_sums)) / k + total * total / (k * r))
        return max(0.0, residual) / best, best

    def _sum(self, i: int, n: int) -> float:
        return self.sums[i] if n == len(self.logs[i]) else sum(self.logs[i][:n])

    def mean(self, i: int) -> float:
        """Arm i's mean log value over its rounds (-inf where it has none)."""
        return self.sums[i] / len(self.logs[i]) if self.logs[i] else -math.inf

    def rounds(self, i: int) -> int:
        return len(self.logs[i])

    def compare(self, a: int, b: int, confidence: float = 0.95, power: float = 0.8, own: bool = False) -> dict:
        """How much larger arm a's values are than arm b's: the ratio of their geometric means over the
        rounds both ran, as a relative difference, with its interval at `confidence` (the noise pooled
        over the race) and the smallest relative difference these rounds could have detected at that
        confidence and `power`. With `own`, the pair's own noise where it is the larger (its paired
        rounds alone, rounds - 1 degrees of freedom): the pooled noise assumes one noise for every arm,
        and where two arms are noisier than the rest (your settings at a small batch size, a busy arm) it
        would make their interval too narrow; a decision takes the wider of the two."""
        n = min(len(self.logs[a]), len(self.logs[b]))
        result = {"ratio": None, "ci_low": None, "ci_high": None, "detectable": None, "pairs": n, "df": self.df}
        if n == 0:
            return result
        mean = (self._sum(a, n) - self._sum(b, n)) / n
        result["ratio"] = math.expm1(mean)
        if self.variance is None:
            return result
        se, df = math.sqrt(2 * self.variance / n), self.df
        if own and n > 1:
            pair = stdev([x - y for x, y in zip(self.logs[a][:n], self.logs[b][:n])]) / math.sqrt(n)
            if pair > se:
                se, df = pair, n - 1
        t = t_quantile(0.5 + confidence / 2.0, df)
        return {**result, "df": df, "ci_low": math.expm1(mean - t * se), "ci_high": math.expm1(mean + t * se),
                "detectable": math.expm1((t + t_quantile(power, df)) * se)}
