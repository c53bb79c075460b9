"""Numbers as the report and the terminal print them: significant digits by magnitude (12345, 1234, 123,
12.3, 1.23, 0.123, 0.0123), so that figures side by side read alike, each with its unit where it stands
alone."""

import math


def decimals(x: float) -> int:
    """The decimals that give `x` three significant digits, and none after the point from 100 on."""
    a = abs(x)
    if a == 0 or not math.isfinite(a):
        return 0
    return max(0, 2 - math.floor(math.log10(a)))


def number(x: float, like: float | None = None) -> str:
    """`x` with three significant digits (with as many decimals as `like` gets, where given: an interval's
    ends or a standard deviation printed as its mean is)."""
    return f"{x:.{decimals(x if like is None else like)}f}"


def quantity(x: float, unit: str, like: float | None = None) -> str:
    """'227 ms', '12.3 samples/s', '45.2%'."""
    return f"{number(x, like)}{'' if unit == '%' else ' '}{unit}"
