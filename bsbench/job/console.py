"""What reaches the terminal. A sweep prints one line per job (job k of N, its setting, its figure,
elapsed and estimated time left), the warnings a user can act on, and at the end the summary and the
verdict. Everything else that Lightning, torch and Hydra say per job (device banners, tips, "fit
stopped", Hydra's launcher lines, deprecation warnings meant for library authors) goes to the job's
log file only (`bsbench.log` in its directory). `verbose=true` shows it all on the terminal too.

Hydra configures Python's logging from conf/hydra/{hydra_logging,job_logging}/bsbench.yaml, whose
console handlers use the filter and formatter below; the DDP ranks, which Hydra does not start,
configure theirs with `configure_rank`. Stdlib only: Hydra imports this before any job runs."""

import json
import logging
import os
import sys
import time
import warnings
from pathlib import Path

from bsbench.core import process

# Warnings that tell a library's authors, or a user of another tool, what to change; not a bsbench user.
NOT_ACTIONABLE = (
    "is deprecated",  # Lightning's and torch's use of each other's APIs (e.g. Lightning's _pytree)
    "The `srun` command is available on your system but is not used",  # bsbench's SLURM path is hydra/launcher=slurm
    "litlogger",  # an advertisement
    "not found. Creating it",  # logger=mlflow's first run under output_root makes its experiment
)
# Lightning warnings that are about setups bsbench chose on purpose.
BY_DESIGN = (
    "does not have many workers",  # data.resize_on=device: the loader only indexes memory
    "The number of training batches",  # short smoke and throughput runs log less often than every 50 steps
    "Profiler clears events at the end of each cycle",  # mode=profile saves each profile as it ends
    # DDP: every rank tests its share of the test set, as the result's inference_world_size records
    "During `trainer.test()`, it is recommended to use `Trainer(devices=1",
)
# Categories that address a library's authors: an API to change, a file left open.
LIBRARY_WARNINGS = (DeprecationWarning, PendingDeprecationWarning, FutureWarning, ResourceWarning)
LOG_ONLY = "bsbench_log_only"  # `extra={LOG_ONLY: True}`: a bsbench record for the log file alone (tracebacks)


class ConsoleFilter(logging.Filter):
    """bsbench's own lines, and other libraries' warnings and errors that a user can act on, each once."""

    # shared by every instance: Hydra configures logging, and so makes a new filter, for every job of a
    # sweep, and the jobs run in one process
    seen: set[str] = set()

    def __init__(self, verbose: bool = False):
        super().__init__()
        self.verbose = verbose

    def filter(self, record: logging.LogRecord) -> bool:
        if self.verbose:
            return True
        if record.name == "bsbench" or record.name.startswith("bsbench."):
            return not getattr(record, LOG_ONLY, False)
        if record.levelno < logging.WARNING:
            return False
        message = record.getMessage()
        if any(text in message for text in (*NOT_ACTIONABLE, *BY_DESIGN)):
            return False
        if issubclass(getattr(record, "category", Warning), LIBRARY_WARNINGS):
            return False
        key = f"{record.name}:{message}"
        if key in self.seen:  # once per process, whichever job says it
            return False
        self.seen.add(key)
        return True


class ConsoleFormatter(logging.Formatter):
    """bsbench's lines as they are; another library's warning named after it: `warning (lightning): ...`."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.name == "bsbench" or record.name.startswith("bsbench."):
            return message
        source = "python" if record.name == "py.warnings" else record.name.split(".")[0]
        return f"{record.levelname.lower()} ({source}): {message.strip()}"


def _log_warning(message, category, filename, lineno, file=None, line=None) -> None:
    logging.getLogger("py.warnings").warning("%s:%s: %s: %s", filename, lineno, category.__name__, message,
                                             extra={"category": category})


def route_library_output() -> None:
    """Python warnings through logging, each with its category (so the console filter sees them, and
    the log keeps them), and Lightning's loggers into the root's handlers: Lightning gives itself a
    handler of its own when it is imported before logging is configured."""
    if not sys.warnoptions:  # the user's -W or PYTHONWARNINGS stands
        warnings.simplefilter("default")  # each warning once per place, not silenced by a library's filter
    warnings.showwarning = _log_warning
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "torchmetrics"):
        logger = logging.getLogger(name)
        for handler in list(logger.handlers):
            if type(handler) is logging.StreamHandler:
                logger.removeHandler(handler)
        logger.propagate = True


class LogFile(logging.FileHandler):
    """A log file that, once it cannot be written (a full disk, a read-only one), says so in one line
    naming it and stops writing, where Python's handler prints a traceback for every record after."""

    failed = False

    def emit(self, record: logging.LogRecord) -> None:
        if not self.failed:
            super().emit(record)

    def handleError(self, record: logging.LogRecord) -> None:
        if self.failed:
            return
        self.failed = True
        error = sys.exc_info()[1]
        stream, self.stream = self.stream, None
        try:  # what is still buffered cannot be written either
            if stream is not None:
                stream.close()
        except OSError:
            pass
        why = getattr(error, "strerror", None) or error
        print(f"bsbench: warning: could not write {self.baseFilename} ({why}); nothing more goes into that log.",
              file=sys.stderr, flush=True)


def configure_rank(log_file: str, verbose: bool, rank: str) -> None:
    """A DDP rank's logging: everything into the job's log file, the console as a job's."""
    file = LogFile(log_file)
    file.setFormatter(logging.Formatter(f"[%(asctime)s][rank {rank}][%(name)s][%(levelname)s] - %(message)s"))
    console = logging.StreamHandler()
    console.addFilter(ConsoleFilter(verbose))
    console.setFormatter(ConsoleFormatter())
    logging.basicConfig(level=logging.INFO, handlers=[file, console], force=True)
    route_library_output()


def clock(seconds: float) -> str:
    """1:02:03, 2:03 or 0:05."""
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def progress(done: int, total: int, started: float, now: float | None = None) -> tuple[str, str]:
    """(`job 3 of 16`, `0:42 elapsed, about 3:02 left`): the time left at the mean pace of the jobs done."""
    elapsed = (now if now is not None else time.time()) - started
    left = f", about {clock(elapsed / done * (total - done))} left" if 0 < done < total else ""
    return f"job {done} of {total}", f"{clock(elapsed)} elapsed{left}"


PROGRESS_ENV = "BSBENCH_SWEEP_PROGRESS"  # {"total": jobs in this launch, "started": the process's start}
_sweep_log: logging.Handler | None = None


def follow_sweep(directory: Path, total: int) -> None:
    """Once a sweep's directory is claimed: Hydra's launcher lines and bsbench's into its sweep.log,
    and the sweep's size and start where its jobs find them (the environment: the basic launcher
    runs them in this process, submitit's launchers hand it on)."""
    global _sweep_log
    for name in ("hydra", "bsbench"):
        if _sweep_log is not None:
            logging.getLogger(name).removeHandler(_sweep_log)
    _sweep_log = LogFile(Path(directory) / "sweep.log")
    _sweep_log.setFormatter(logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"))
    for name in ("hydra", "bsbench"):
        logging.getLogger(name).addHandler(_sweep_log)
    logging.getLogger("hydra").setLevel(logging.INFO)
    # elapsed from the process's start (imports and the sweep's planning included), as its user waited
    os.environ[PROGRESS_ENV] = json.dumps({"total": total, "started": process.STARTED_AT})


def sweep_progress(position: int | None) -> tuple[str, str] | None:
    """progress() of the job at `position` (from 0) of this launch, when it ends."""
    try:
        sweep = json.loads(os.environ[PROGRESS_ENV])
        return progress(position + 1, int(sweep["total"]), float(sweep["started"]))
    except (KeyError, TypeError, ValueError):
        return None
