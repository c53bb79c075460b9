"""`python -m bsbench ...` for the tests, without paying its imports each time.

This process imports what a bsbench command imports (torch, Lightning, Hydra, matplotlib: about 5 s
of a 2-core machine's time) once, then forks a child for each command it is sent. The child is set up
as `python -m bsbench` would start in that directory with that environment (its own process, cwd,
environment, sys.path from PYTHONPATH, argv, stdin, stdout and stderr files, torch's thread count from
OMP_NUM_THREADS) and runs bsbench's __main__ as the interpreter would, exit status included. What a
command does after its start is the command's own: its sweep, its DDP ranks (torchrun, fresh
processes), its SLURM jobs. Signals reach it as they reach a process started in a session of its own.
Tests of what only a fresh interpreter shows (what it imports) start real processes instead.

Protocol, one JSON object per line: a request {"args", "cwd", "env", "stdout", "stderr"} on stdin is
answered {"started": pid} once its child is forked; {"ended": pid, "returncode": ...} follows whenever
a child ends (several may run at once, as two commands started together do). At the end of its input
it kills what still runs and exits."""

import json
import os
import select
import signal
import sys

BASE_PATH = [p for p in sys.path[1:] if p not in os.environ.get("PYTHONPATH", "").split(os.pathsep)]


def preload() -> None:
    import lightning.pytorch  # noqa: F401
    import matplotlib.pyplot  # noqa: F401
    import torch  # noqa: F401
    import torchvision  # noqa: F401

    import bsbench.job.app  # noqa: F401
    import bsbench.job.job  # noqa: F401
    import bsbench.job.run  # noqa: F401
    import bsbench.report.cli  # noqa: F401


def child(request: dict) -> None:
    """Become `python -m bsbench <args>` as started in request's cwd with its environment (in a session of
    its own, as `subprocess.Popen(..., start_new_session=True)` starts one); never returns."""
    code = 1
    try:
        os.setsid()
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        for fd, path, flags in ((0, os.devnull, os.O_RDONLY), (1, request["stdout"], os.O_WRONLY | os.O_CREAT),
                                (2, request["stderr"], os.O_WRONLY | os.O_CREAT)):
            opened = os.open(path, flags)
            os.dup2(opened, fd)
            os.close(opened)
        sys.stdin = open(os.devnull)
        extra = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
        sys.path[:] = [os.getcwd(), *extra, *BASE_PATH]
        import importlib
        import time

        import torch

        importlib.invalidate_caches()
        if os.environ.get("OMP_NUM_THREADS", "").isdigit():  # what OpenMP reads when a fresh process loads it
            torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
        import bsbench

        bsbench.STARTED_AT = time.time()
        sys.argv = ["bsbench", *request["args"]]
        import runpy

        try:
            runpy.run_module("bsbench", run_name="__main__", alter_sys=True)
            code = 0
        except SystemExit as stop:
            if stop.code is None or isinstance(stop.code, int):
                code = stop.code or 0
            else:
                print(stop.code, file=sys.stderr)
                code = 1
        except KeyboardInterrupt:  # as the interpreter ends on one: the traceback, then killed by SIGINT
            import traceback

            traceback.print_exc()
            code = -signal.SIGINT
        except BaseException:
            import traceback

            traceback.print_exc()
            code = 1
        import atexit

        atexit._run_exitfuncs()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass
        if code < 0:
            signal.signal(-code, signal.SIG_DFL)
            os.kill(os.getpid(), -code)
        os._exit(code)


def say(message: dict) -> None:
    os.write(1, (json.dumps(message) + "\n").encode())


def main() -> None:
    preload()
    children, pending = set(), b""
    while True:
        ready = select.select([0], [], [], 0.05)[0]
        if ready:
            chunk = os.read(0, 65536)
            if not chunk:
                break
            pending += chunk
            while b"\n" in pending:
                line, pending = pending.split(b"\n", 1)
                request = json.loads(line)
                sys.stdout.flush()
                sys.stderr.flush()
                pid = os.fork()
                if pid == 0:
                    child(request)
                children.add(pid)
                say({"started": pid})
        for pid in list(children):
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                children.discard(pid)
                say({"ended": pid, "returncode": os.waitstatus_to_exitcode(status)})
    for pid in children:
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


if __name__ == "__main__":
    main()
