"""Range checks the modes and bsbench.job.validate share: one sentence naming the setting and a value
that would work. Stdlib only."""

from bsbench.core.errors import UserError


def at_least(value, low, key: str, example, strictly: bool = False) -> None:
    if value < low or (strictly and value == low):
        wanted = f"greater than {low}" if strictly else ("a positive integer" if low == 1 else f"at least {low}")
        shown = f"{value:g}" if isinstance(value, float) else value  # -1, as typed, not the schema's -1.0
        raise UserError(f"{key}={shown} is not {wanted}; use e.g. {key}={example}.")
