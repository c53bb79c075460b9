"""A run's result: one flat JSON object per run directory, written atomically."""

import datetime as dt
import json
import os
import tempfile
import traceback
from pathlib import Path

import torch
from lightning.pytorch.utilities.memory import is_oom_error
from omegaconf import DictConfig

RESULT_FILE = "results.json"


def setup_fields(cfg: DictConfig) -> dict:
    """What was asked for: the fields every result has, finished or not."""
    return {
        "mode": cfg.mode,
        "batch_size": cfg.batch_size,
        "precision": str(cfg.precision),
        "devices": cfg.devices,
        "strategy": str(cfg.strategy),
        "accelerator": str(cfg.accelerator),
        "epochs": cfg.epochs,
        "model": cfg.model.arch,
        "data": cfg.data.name,
        "image_size": cfg.data.image_size,
        "seed": cfg.seed,
        "repeat": cfg.repeat,
        "resize_on": cfg.data.resize_on,
        "channels_last": cfg.channels_last,
        "cudnn_benchmark": cfg.cudnn_benchmark,
        "compile": cfg.compile,
        "matmul_precision": cfg.matmul_precision,
    }


def now() -> str:
    """Local time with its UTC offset, to the millisecond: when runs of a sweep started and ended."""
    return dt.datetime.now(dt.timezone.utc).astimezone().isoformat(timespec="milliseconds")


def is_oom(exc: BaseException) -> bool:
    """Device or host memory ran out: CUDA's OutOfMemoryError, cuDNN's and the CPU allocator's
    messages (Lightning's own test), or Python's MemoryError."""
    return isinstance(exc, (torch.OutOfMemoryError, MemoryError)) or is_oom_error(exc)


def unfinished(cfg: DictConfig, status: str, exc: BaseException | None = None) -> dict:
    """The result of a run that did not finish: status oom, failed or interrupted, and why."""
    result = {"status": status, **setup_fields(cfg), "finished_at": now()}
    if exc is not None:
        result.update(
            error_type=type(exc).__name__,
            error=str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__,
            traceback="".join(traceback.format_exception(exc)),
        )
    return result


def write_json_atomic(path: Path, obj: dict) -> None:
    """Write to a temporary file beside `path`, then rename: a reader (or a killed run) never sees
    a half-written file."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=2, default=str)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_results(directory: Path) -> list[dict]:
    """Every results.json under `directory`, each with the directory it came from."""
    results = []
    for path in sorted(Path(directory).rglob(RESULT_FILE)):
        with open(path) as f:
            result = json.load(f)
        result["run_dir"] = str(path.parent)
        results.append(result)
    return results


def finished_runs(directory: Path) -> dict[tuple, dict]:
    """The ok results under `directory`, by their sorted overrides: what a resumed sweep skips."""
    if not Path(directory).is_dir():
        return {}
    return {tuple(sorted(r.get("overrides", []))): r for r in read_results(directory) if r.get("status") == "ok"}
