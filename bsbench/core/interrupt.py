"""Ctrl-C and SIGTERM (a scheduler's stop, `timeout`) end a job as an interruption: the job is
recorded as interrupted and the sweep stops, keeping what finished. Python delivers a signal as an
exception wherever the main thread is, and an exception raised inside a finalizer (`__del__`, which
garbage collection runs at any moment) is printed and dropped: the stop would be lost and the sweep
would go on. So the request is also remembered, and checked where bsbench can act on it (every
training step, every job's start)."""

import signal

_requested: int | None = None


def _on_signal(signum, frame):
    global _requested
    _requested = signum
    raise KeyboardInterrupt(f"signal {signum}")


def install() -> None:
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)


def check() -> None:
    """Raise the interruption again if a stop was asked for and its first delivery was swallowed."""
    if _requested is not None:
        raise KeyboardInterrupt(f"signal {_requested}")
