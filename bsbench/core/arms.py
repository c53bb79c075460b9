"""Arms and pairs: what mode=compare and mode=tune measure against each other, named and paired the
same way by the modes that run them and the report that reads them. Stdlib only."""

import re


def is_power_of_two(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


def kind(n: int) -> str:
    """'2^9, 8×64': what makes a batch size one the verdict compares with its neighbours ('' if nothing)."""
    tags = [f"2^{n.bit_length() - 1}"] if is_power_of_two(n) else []
    if n % 8 == 0:
        tags.append(f"8×{n // 8}")
    return ", ".join(tags)


def neighbour_pairs(batch_sizes) -> list[tuple[int, int]]:
    """(b, n) for every power of two or multiple of 8 b among the batch sizes and each of its nearest
    smaller and larger ones n: the comparisons a verdict makes, and the ones adaptive stopping waits for."""
    sizes = sorted(set(batch_sizes))
    return [(b, sizes[j]) for i, b in enumerate(sizes) if kind(b) for j in (i - 1, i + 1) if 0 <= j < len(sizes)]


def text(value) -> str:
    """A setting's value as the command line writes it: true, null, bf16-mixed."""
    return "null" if value is None else str(value).lower() if isinstance(value, bool) else str(value)


def describe(setting: dict, keys=None) -> str:
    """An arm in words: `channels_last=true precision=bf16-mixed` (only `keys`, where given)."""
    return " ".join(f"{k}={text(v)}" for k, v in setting.items() if keys is None or k in keys)


def folder(setting: dict) -> str:
    """An arm's folder under its job's: bs512, bs512_channels_last-true, bs256_precision-bf16-mixed."""
    name = f"bs{setting['batch_size']}" + "".join(f"_{k}-{text(v)}" for k, v in setting.items() if k != "batch_size")
    return re.sub(r"[^A-Za-z0-9._-]", "-", name)


def varying(settings: list[dict]) -> list[str]:
    """The keys whose values differ between arms, in the order the arms name them."""
    keys = list(dict.fromkeys(k for s in settings for k in s))
    return [k for k in keys if len({text(s.get(k)) for s in settings}) > 1]


def arm_names(settings: list[dict]) -> list[str]:
    """Each arm by what sets it apart: `512` where only batch sizes differ, else its differing keys."""
    keys = varying(settings)
    if keys == ["batch_size"]:
        return [str(s["batch_size"]) for s in settings]
    return [describe(s, keys) or describe(s) for s in settings]


def against_first(settings: list[dict]) -> list[tuple[int, int]]:
    """(arm, the first setting's arm at the same batch size) for every other setting's arm."""
    first: dict[int, int] = {}
    pairs = []
    for i, s in enumerate(settings):
        base = first.setdefault(s["batch_size"], i)
        if base != i:
            pairs.append((i, base))
    return pairs


def comparisons(settings: list[dict], by_setting: bool) -> list[tuple[int, int]]:
    """The index pairs the rounds wait for: each power of two or multiple of 8 against its neighbours
    among the batch sizes of one setting, and each setting against the first at the same batch size."""
    keys = [k for k in varying(settings) if k != "batch_size"]
    groups: dict[str, dict[int, int]] = {}
    for i, s in enumerate(settings):
        groups.setdefault(str([s.get(k) for k in keys]), {})[s["batch_size"]] = i
    pairs = [(group[b], group[n]) for group in groups.values() for b, n in neighbour_pairs(group)]
    return pairs + (against_first(settings) if by_setting else [])


def changes(setting: dict, start: dict) -> dict:
    """The keys of `setting` whose values differ from `start`'s: what an arm changes in a configuration."""
    return {k: v for k, v in setting.items() if text(start.get(k)) != text(v)}
