"""A run's result on disk: one flat JSON object per run directory (fields: bsbench.core.fields),
written atomically, read back by the report and by a resumed sweep. Stdlib and OmegaConf only."""

import datetime as dt
import json
import os
import tempfile
import traceback
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from bsbench.core.fields import Status, setting_key, setting_of

RESULT_FILE = "results.json"


def now() -> str:
    """Local time with its UTC offset, to the millisecond: when runs of a sweep started and ended."""
    return dt.datetime.now(dt.timezone.utc).astimezone().isoformat(timespec="milliseconds")


def config_dict(cfg: DictConfig) -> dict:
    return OmegaConf.to_container(cfg, resolve=True)


def setup_fields(cfg: DictConfig) -> dict:
    """What was asked for: the fields every result has, finished or not."""
    trainer = cfg.trainer
    config = config_dict(cfg)
    return {
        "mode": cfg.mode,
        "batch_size": cfg.batch_size,
        "precision": str(cfg.precision),
        "devices": config["devices"],
        "strategy": str(cfg.strategy),
        "accelerator": str(cfg.accelerator),
        "epochs": trainer.max_epochs if trainer.max_epochs is not None and trainer.max_epochs > 0 else None,
        "max_steps": trainer.max_steps if trainer.max_steps > 0 else None,
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
        "fused_adam": cfg.model.fused_adam,
        "train_acc_eval_forward": cfg.model.train_acc_eval_forward,
        "config": config,
    }


def unfinished(cfg: DictConfig, status: Status, exc: BaseException | None = None) -> dict:
    """The result of a run that did not finish: status oom, failed or interrupted, and why."""
    result = {"status": status, **setup_fields(cfg), "finished_at": now()}
    if exc is not None:
        message = str(exc).strip()
        result.update(
            error_type=type(exc).__name__,
            error=message.splitlines()[0] if message else type(exc).__name__,
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


def job_key(config: dict) -> tuple:
    """What makes a job the same job again: its setting, batch size and repeat."""
    return setting_key(setting_of(config)), config.get("batch_size"), config.get("repeat") or 0


def finished_runs(directory: Path) -> dict[tuple, dict]:
    """The ok results under `directory`, by job (setting, batch size, repeat): what a resumed sweep skips."""
    if not Path(directory).is_dir():
        return {}
    return {job_key(r.get("config") or {}): r for r in read_results(directory) if r.get("status") == Status.OK}
