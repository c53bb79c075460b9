"""The plan of a sweep, made before any job runs (bsbench's sweeper calls it): every job typed and
checked; the sweep's directory claimed for this process alone; with `resume=`, the jobs that already
have an `ok` result dropped; and every other job given a folder named after what it is
(bsbench.core.identity), so that no job ever writes into another configuration's folder, whatever
the order or the wording of the command that resumes it.

A sweep directory belongs to one sweep: a new sweep never takes a directory that holds another
sweep (two started in the same second get `<time>` and `<time>-2`), and a second process cannot
resume a directory that a live one is using. The claim is an advisory lock (flock) on a file in the
directory, held as long as the process lives, so a killed sweep leaves no stale lock behind."""

import logging
import os
from pathlib import Path
from typing import Callable

from omegaconf import DictConfig, open_dict, read_write

from bsbench.core.config import typed
from bsbench.core.errors import UserError
from bsbench.core.identity import job_dir_name, job_id
from bsbench.core.results import RESULT_FILE, finished_runs
from bsbench.job.console import LOG_ONLY, follow_sweep

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; sweeps are not guarded against each other there
    fcntl = None

log = logging.getLogger("bsbench")
LOCK_FILE = ".bsbench.lock"
SWEEP_MARK = "multirun.yaml"  # Hydra writes it when a sweep starts
_held: list[int] = []  # the locks of this process's sweep directory, released when it exits


def plan(config: DictConfig, load: Callable[[list[str]], DictConfig], here: bool,
         jobs: list[list[str]]) -> list[list[str]]:
    """The jobs to launch, each with the Hydra overrides that put it in its own folder of the claimed
    directory. `load` composes a job's config from its overrides."""
    from bsbench.job.validate import validate  # torch: after the types, which need none

    configs = [typed(load(overrides)) for overrides in jobs]
    for cfg in configs:
        validate(cfg, here=here)
    ids = [job_id(cfg) for cfg in configs]
    for i, job in enumerate(ids):
        if job in ids[:i]:
            first = jobs[ids.index(job)]
            raise UserError(f"{' '.join(jobs[i])} is the same job as {' '.join(first)} (they would share a folder); "
                            "use repeats=N to run a configuration N times.")
    directory = claim(config)
    done = finished_runs(directory) if config.resume else {}
    planned = [[*overrides, f"hydra.sweep.dir={_quoted(directory)}", f"hydra.sweep.subdir={job_dir_name(cfg, job)}"]
               for overrides, cfg, job in zip(jobs, configs, ids) if job not in done]
    follow_sweep(directory, len(planned))
    for overrides, job in zip(jobs, ids):
        if job in done:
            log.info("%s: already done in %s, skipped", " ".join(overrides), done[job]["run_dir"],
                     extra={LOG_ONLY: True})
    if config.resume:
        log.info("resuming %s: %d of %d jobs already done there, %d to run", directory, len(jobs) - len(planned),
                 len(jobs), len(planned))
    return planned


def claim(config: DictConfig) -> Path:
    """The sweep's directory, locked for this process, and written into the sweep's config (Hydra saves
    it as multirun.yaml and its callbacks read it from there)."""
    directory = _resumed(Path(config.resume)) if config.resume else _new(Path(config.hydra.sweep.dir))
    with read_write(config.hydra.sweep), open_dict(config.hydra.sweep):
        config.hydra.sweep.dir = str(directory)
    return directory


def check_resumable(resume: str) -> None:
    """resume= must name a sweep directory this process could write into (checked before any job)."""
    path = Path(resume)
    if not (path / SWEEP_MARK).is_file():
        raise UserError(f"resume={resume} holds no bsbench sweep (no {SWEEP_MARK}); use the directory a sweep "
                        "printed, e.g. resume=outputs/multirun/<date>/<time>.")
    if not os.access(path, os.W_OK | os.X_OK):
        raise UserError(f"resume={resume} is not writable; resume as a user who can write there, or copy the "
                        "directory and resume the copy.")


def _resumed(path: Path) -> Path:
    check_resumable(str(path))
    if not _lock(path):
        raise UserError(f"resume={path} is in use by another bsbench process ({_holder(path)}); wait for it to end "
                        "or stop it, then resume.")
    return path


def _new(base: Path) -> Path:
    for n in range(1, 1000):
        candidate = base if n == 1 else base.with_name(f"{base.name}-{n}")
        candidate.mkdir(parents=True, exist_ok=True)
        if not _lock(candidate):
            continue
        if (candidate / SWEEP_MARK).exists() or next(candidate.rglob(RESULT_FILE), None) is not None:
            os.close(_held.pop())  # another sweep's, finished
            continue
        return candidate
    raise UserError(f"hydra.sweep.dir={base} and 998 siblings hold other sweeps; use another hydra.sweep.dir.")


def _lock(directory: Path) -> bool:
    if fcntl is None:
        return True
    fd = os.open(directory / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:  # another process holds it
        os.close(fd)
        return False
    except OSError as exc:  # a file system without locks (some network mounts): go on unguarded
        log.warning("cannot lock %s (%s): nothing stops another process from using this sweep directory",
                    directory, exc.strerror)
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    _held.append(fd)
    return True


def _holder(directory: Path) -> str:
    try:
        return f"pid {int((directory / LOCK_FILE).read_text().strip())}"
    except (OSError, ValueError):
        return "pid unknown"


def _quoted(path: Path) -> str:
    """A path as a quoted value of Hydra's override grammar."""
    return "'" + str(path).replace("\\", "\\\\").replace("'", "\\'") + "'"


def remove_empty_files(directory: Path) -> None:
    """After a failed write: no zero-byte file stays behind (Hydra's .hydra/*.yaml, a log) to pass
    for a result."""
    for path in Path(directory).rglob("*"):
        try:
            if path.is_file() and path.name != LOCK_FILE and path.stat().st_size == 0:
                path.unlink()
        except OSError:
            pass
