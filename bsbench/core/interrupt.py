"""Ctrl-C and SIGTERM (a scheduler's stop, `timeout`) end a job as an interruption: the job is
recorded as interrupted and the sweep stops, keeping what finished. Python delivers a signal as an
exception wherever the main thread is, and an exception raised inside a finalizer (`__del__`, which
garbage collection runs at any moment) is printed and dropped: the stop would be lost and the sweep
would go on. So the request is also remembered, and checked where bsbench can act on it (every
training step, every job's start).

Under SLURM, a job also stops at submitit's warning signal (SIGUSR2, `hydra.launcher.signal_delay_s`
before the job's time limit): bsbench runs have no checkpoint to requeue from, so the job records
itself as interrupted while it still can, instead of being killed at the limit."""

import os
import signal
import sys
import time

from bsbench.core import process

_requested: int | None = None


def _quiet_when_swallowed(unraisable) -> None:
    """A stop that a finalizer swallowed is remembered and raised again by check(): Python's note about
    it ("Exception ignored in ...", with a traceback) would only alarm whoever pressed Ctrl-C."""
    if isinstance(unraisable.exc_value, KeyboardInterrupt) and _requested is not None:
        return
    sys.__unraisablehook__(unraisable)


AGAIN_S = 2.0  # a second signal this soon after the first (people press Ctrl-C twice) changes nothing
_first_at: float | None = None


def _on_signal(signum, frame):
    global _requested, _first_at
    if _first_at is not None and time.monotonic() - _first_at < AGAIN_S:
        return  # the first stop is being recorded; a later signal (a stop that hangs) stops it again
    _requested, _first_at = signum, time.monotonic()
    raise KeyboardInterrupt(f"signal {signum}")


def from_the_start() -> None:
    """SIGTERM handled as Ctrl-C from the process's start (`python -m bsbench`, the console script): what
    the command is doing when it comes (checking, planning, running a job) stops as Ctrl-C would stop it."""
    signal.signal(signal.SIGTERM, _on_signal)


def install() -> None:
    sys.unraisablehook = _quiet_when_swallowed
    signal.signal(signal.SIGTERM, _on_signal)
    if not process.SIGINT_IGNORED:  # a background job of a script: Ctrl-C is its foreground's
        signal.signal(signal.SIGINT, _on_signal)
    if "SLURM_JOB_ID" in os.environ and hasattr(signal, "SIGUSR2"):
        signal.signal(signal.SIGUSR2, _on_signal)


def requested() -> bool:
    """Whether a stop was asked for."""
    return _requested is not None


def check() -> None:
    """Raise the interruption again if a stop was asked for and its first delivery was swallowed."""
    if _requested is not None:
        raise KeyboardInterrupt(f"signal {_requested}")


def reason() -> str:
    """What stopped the job, in words, for its result's `error`."""
    if _requested == signal.SIGINT or _requested is None:
        return "Ctrl-C (SIGINT)"
    if _requested == getattr(signal, "SIGUSR2", None):
        return ("SLURM's warning that the job's time limit was near (hydra.launcher.signal_delay_s before "
                "hydra.launcher.timeout_min); raise hydra.launcher.timeout_min and resume")
    if "SLURM_JOB_ID" in os.environ:
        return "SIGTERM from SLURM: the job was cancelled (scancel), preempted or reached its time limit"
    return "SIGTERM: the job was asked to stop (a scheduler, `timeout`, `kill`)"
