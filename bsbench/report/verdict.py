"""The answer to the question bsbench exists for: is a power of two (or a multiple of 8) faster than
its neighbours in the sweep? Each such batch size is compared with the nearest smaller and larger
batch sizes of the same setting, on steady-state training throughput, with a 95% interval."""

from statistics import median

from bsbench.report.stats import compare


def is_power_of_two(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


def kind(n: int) -> str:
    tags = [f"2^{n.bit_length() - 1}"] if is_power_of_two(n) else []
    if n % 8 == 0:
        tags.append(f"8×{n // 8}")
    return ", ".join(tags)


def reading(c: dict) -> str:
    if c["ci_low"] is None:
        return "one run on a side: no interval (run the sweep with repeats=3 or more)"
    lo, hi = c["ci_low"], c["ci_high"]
    if lo <= 0.0 <= hi:
        return "no detectable difference at this precision"
    if lo > 0:
        return f"{c['ratio']:.1%} faster ({lo:.1%} to {hi:.1%})"
    return f"{-c['ratio']:.1%} slower ({-hi:.1%} to {-lo:.1%})"


def comparisons(rows: list[dict]) -> list[dict]:
    """For every power of two and multiple of 8, its throughput against each neighbour in the sweep."""
    found = []
    groups: dict[str, list[dict]] = {}
    for row in rows:
        if row["train_samples_per_s_values"]:
            groups.setdefault(row["_group"], []).append(row)
    for group_rows in groups.values():
        group_rows.sort(key=lambda row: row["batch_size"])
        for i, row in enumerate(group_rows):
            if not kind(row["batch_size"]):
                continue
            for j in (i - 1, i + 1):
                if 0 <= j < len(group_rows):
                    other = group_rows[j]
                    mine, theirs = row["train_samples_per_s_values"], other["train_samples_per_s_values"]
                    c = compare(mine, theirs)
                    found.append({"setting": row["setting"], "batch_size": row["batch_size"], "kind": kind(row["batch_size"]),
                                  "against": other["batch_size"], "runs": (len(mine), len(theirs)),
                                  **c, "reading": reading(c)})
    return found


def _pct(x: float | None) -> str:
    return "" if x is None else f"{x:+.1%}"


def verdict_markdown(rows: list[dict]) -> str:
    found = comparisons(rows)
    lines = ["# Are powers of two (or multiples of 8) faster here?", ""]
    if not found:
        return "\n".join(lines + ["The sweep holds no power of two or multiple of 8 with a neighbour to compare it with "
                                  "(sweep a range around one, e.g. `batch_size=range(500,516)`).", ""])
    lines += ["Each power of two and multiple of 8 in the sweep against its nearest smaller and larger batch size of "
              "the same setting, on steady-state training throughput (samples/s). The difference is how much faster "
              "the first is, with a 95% confidence interval (Welch's t on log throughput).", ""]
    header = ["batch size", "", "against", "runs", "difference in samples/s", "95% interval", "reading", "setting"]
    lines += ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for c in found:
        interval = f"{_pct(c['ci_low'])} to {_pct(c['ci_high'])}" if c["ci_low"] is not None else ""
        lines.append(f"| {c['batch_size']} | {c['kind']} | {c['against']} | {c['runs'][0]} vs {c['runs'][1]} | "
                     f"{_pct(c['ratio'])} | {interval} | {c['reading']} | {c['setting']} |")
    detectable = [c["detectable"] for c in found if c["detectable"] is not None]
    faster = sum(c["ci_low"] is not None and c["ci_low"] > 0 for c in found)
    slower = sum(c["ci_high"] is not None and c["ci_high"] < 0 for c in found)
    lines += ["", f"Of {len(found)} comparisons, {faster} found the power of two or multiple of 8 faster, {slower} slower, "
              f"and {len(found) - faster - slower} no detectable difference (or too few runs to tell)."]
    if detectable:
        lines.append(f"This sweep could have detected differences of about {median(detectable):.1%} or more "
                     "(median over the comparisons; 95% confidence, 80% power). More repeats detect smaller ones.")
    return "\n".join(lines) + "\n"
