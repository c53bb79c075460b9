"""A run's result on disk: one flat JSON object per run directory (fields: bsbench.core.fields),
written atomically, read back by the report and by a resumed sweep. The standard library only."""

import datetime as dt
import json
import math
import os
import tempfile
from pathlib import Path

from bsbench.core.fields import FIELD_KINDS, KIND_WORDS, Status, of_kind

RESULT_FILE = "results.json"


def now() -> str:
    """Local time with its UTC offset, to the millisecond: when runs of a sweep started and ended."""
    return dt.datetime.now(dt.timezone.utc).astimezone().isoformat(timespec="milliseconds")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def finite(obj):
    """`obj` as valid JSON holds it: every float that is not finite (NaN, an infinity, which JSON has
    no spelling for) replaced by null; a dict gets `nonfinite_values`, each such field's dotted path
    with what it was, as text."""
    found: dict[str, str] = {}

    def clean(value, key: str):
        if isinstance(value, float) and not math.isfinite(value):
            found[key] = str(value)
            return None
        if isinstance(value, dict):
            return {k: clean(v, f"{key}.{k}" if key else str(k)) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [clean(v, f"{key}[{i}]") for i, v in enumerate(value)]
        return value

    cleaned = clean(obj, "")
    if found and isinstance(cleaned, dict):
        cleaned["nonfinite_values"] = {**(cleaned.get("nonfinite_values") or {}), **found}
    return cleaned


def to_json(obj, **kwargs) -> str:
    """JSON that every reader takes: no NaN or Infinity (`finite`)."""
    return json.dumps(finite(obj), default=str, allow_nan=False, **kwargs)


def write_atomic(path: Path, data: str | bytes) -> None:
    """Write to a temporary file beside `path`, then rename: a reader (or a killed run) never sees a
    half-written file, and a failed write (a full disk) leaves none behind and raises an OSError that
    names `path`. The file gets the permissions the umask gives any other file (a temporary file is
    private to its owner)."""
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror, str(path)) from exc
    try:
        with os.fdopen(fd, "wb") as f:
            _fill(f, data.encode() if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise OSError(exc.errno, exc.strerror, str(path)) from exc
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _fill(f, data: bytes) -> None:
    f.write(data)


def write_json_atomic(path: Path, obj: dict) -> None:
    """`obj` as JSON, written atomically (`write_atomic`). A value that is not a finite number is
    written null, with the reason (`finite`)."""
    write_atomic(path, to_json(obj, indent=2) + "\n")


def _profile_problem(result: dict) -> str | None:
    """mode=profile's fields, which the report's "What differs" section computes with."""
    steps, ops = result.get("profile_step_us_per_sample"), result.get("profile_ops")
    if steps is None and ops is None:
        return None
    if not (of_kind(steps, "numbers") and steps and all(v > 0 for v in steps)):
        return "profile_step_us_per_sample is not a list of positive numbers"
    if not isinstance(ops, list) or not all(
            isinstance(op, dict) and isinstance(op.get("name"), str) and of_kind(op.get("us_per_sample"), "numbers")
            and len(op["us_per_sample"]) == len(steps) for op in ops):
        return "profile_ops is not a list of operators, each with its time in every profile"
    return None


def problem(result) -> str | None:
    """Why a parsed results.json cannot be used, or None: a field that is not of its type
    (bsbench.core.fields.FIELD_KINDS: a rate positive, a time or a count not negative), a status that
    is none of the statuses, no batch size, or fields that cannot all be true (`_inconsistency`)."""
    if not isinstance(result, dict):
        return "not a JSON object"
    if result.get("status") not in {str(s) for s in Status}:
        return f"status {result.get('status')!r} is not one of {', '.join(str(s) for s in Status)}"
    if not of_kind(result.get("batch_size"), "size"):
        return f"batch_size {result.get('batch_size')!r} is not a positive integer"
    for key, kind in FIELD_KINDS.items():
        value = result.get(key)
        if value is not None and not of_kind(value, kind):
            shown = json.dumps(value, default=str)
            return f"{key} {shown if len(shown) <= 40 else shown[:37] + '...'} is not {KIND_WORDS[kind]}"
    return _profile_problem(result) or _inconsistency(result)


ROUNDING = 1e-6  # the relative difference two ways of computing one figure may show in a float


def _inconsistency(result: dict) -> str | None:
    """Why a result's fields cannot all be true together, or None: a steady-state rate that is not its
    timed samples over its timed seconds, timed seconds beyond the run's training time, timed samples
    beyond the samples it trained on, a compare arm's rate outside its rounds' rates, an inference rate
    that is not the test set over its time. Fields a result does not have (an earlier bsbench's) are
    not asked for."""
    def given(*keys):
        return all(result.get(k) is not None for k in keys)

    def close(a: float, b: float) -> bool:
        return abs(a - b) <= ROUNDING * max(abs(a), abs(b)) + 1e-12

    rate = result.get("train_samples_per_s")
    if given("train_samples_per_s", "timed_samples", "timed_seconds") and (
            not result["timed_seconds"] or not close(rate, result["timed_samples"] / result["timed_seconds"])):
        return (f"train_samples_per_s {rate:g} is not timed_samples / timed_seconds "
                f"({result['timed_samples']} / {result['timed_seconds']:g})")
    if given("timed_seconds", "train_time_s") and result["timed_seconds"] > result["train_time_s"] * (1 + ROUNDING):
        return f"timed_seconds {result['timed_seconds']:g} is longer than train_time_s {result['train_time_s']:g}"
    if given("timed_samples", "train_samples") and result["timed_samples"] > result["train_samples"]:
        return f"timed_samples {result['timed_samples']} is more than train_samples {result['train_samples']}"
    rounds = result.get("round_samples_per_s")
    if rate is not None and rounds and of_kind(rounds, "numbers") and \
            not min(rounds) * (1 - ROUNDING) <= rate <= max(rounds) * (1 + ROUNDING):
        return f"train_samples_per_s {rate:g} lies outside its rounds' rates ({min(rounds):g} to {max(rounds):g})"
    if result.get("mode") == "train" and given("inference_samples_per_s", "test_samples", "inference_time_s") and (
            not result["inference_time_s"] or not close(result["inference_samples_per_s"],
                                                        result["test_samples"] / result["inference_time_s"])):
        return (f"inference_samples_per_s {result['inference_samples_per_s']:g} is not test_samples / "
                f"inference_time_s ({result['test_samples']} / {result['inference_time_s']:g})")
    times = result.get("epoch_times_s")
    if of_kind(times, "numbers") and any(t < 0 for t in times):
        return "epoch_times_s holds a negative time"
    return None


def _no_constant(name: str):
    raise ValueError(f"{name} is not a JSON number (a value that is not finite must be null)")


def read_results(directory: Path, unreadable: list[tuple[str, str]] | None = None) -> list[dict]:
    """Every usable results.json under `directory`, each with the directory it came from. A file that
    cannot be read or parsed, or holds no usable result, is skipped and, when `unreadable` is given,
    listed there as (path, why)."""
    results = []
    for path in sorted(Path(directory).rglob(RESULT_FILE)):
        try:
            with open(path) as f:
                result = json.load(f, parse_constant=_no_constant)
            why = problem(result)
        except (OSError, UnicodeDecodeError, ValueError) as exc:  # JSONDecodeError is a ValueError
            why = f"{type(exc).__name__}: {exc}"
        if why:
            if unreadable is not None:
                unreadable.append((str(path), why))
            continue
        result["run_dir"] = str(path.parent)
        results.append(result)
    return results


def finished_runs(directory: Path) -> dict[str, dict]:
    """The ok results under `directory`, by job_id: what a resumed sweep skips. An unreadable file
    is not a finished run."""
    if not Path(directory).is_dir():
        return {}
    return {r["job_id"]: r for r in read_results(directory) if r.get("status") == Status.OK and r.get("job_id")}
