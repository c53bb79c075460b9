"""`python -m bsbench ...` for the tests, without paying its imports each time.

This process imports what a bsbench command imports (torch, Lightning, Hydra, matplotlib: about 5 s
of a 2-core machine's time) and fills the caches most of them fill first (`warm`) once, then forks a
child for each command it is sent. The child is set up as `python -m bsbench` would start in that
directory with that environment (its own process, cwd, environment, sys.path from PYTHONPATH, argv,
stdin, stdout and stderr files, torch's thread count from OMP_NUM_THREADS) and runs bsbench's
__main__ as the interpreter would, exit status included. What a
command does after its start is the command's own: its sweep, its DDP ranks (torchrun, fresh
processes), its SLURM jobs. Signals reach it as they reach a process started in a session of its own.
Tests of what only a fresh interpreter shows (what it imports) start real processes instead.

Protocol, one JSON object per line: a request {"args", "cwd", "env", "stdout", "stderr"} (and "module"
where it is not bsbench, "sigint_ignored" where the command starts with Ctrl-C ignored) on stdin is
answered {"started": pid} once its child is forked; {"ended": pid, "returncode": ...} follows whenever
a child ends (several may run at once, as two commands started together do). At the end of its input
it kills what still runs and exits.

Started as `zygote.py SOCKET`, it also serves tests/helpers/zygote_client.py on that Unix socket: the
client is the `$PYTHON` of a script a test runs (.ci/gpu-check), sends {"module", "args", "cwd", "env"}
with its own stdin, stdout and stderr (SCM_RIGHTS), gets {"started": pid} and, when the child ends,
{"returncode": ...}. A client that goes away before then (killed by `timeout -k`) takes its child's
process group with it, as SIGKILL to a command's group would."""

import json
import os
import select
import signal
import socket
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

    warm()


def warm() -> None:
    """What most of the tests' commands compute first, computed once here: experiment=smoke's network
    (mobilenet_v3_small, 10 classes, 32 px) counted on the meta device (bsbench.training.flops.count,
    about 1 s) and tried on its images (the planning's check), and torchvision's list of models. Each
    is a cache of a function of its arguments alone, so a command gets from it what it would have
    computed itself, 1.5 s sooner (a third of a smoke run's time here)."""
    from bsbench.job.validate import _forward_problem, _torchvision_models
    from bsbench.training.flops import count

    count("mobilenet_v3_small", 10, 32, False)
    _forward_problem("mobilenet_v3_small", 32)
    _torchvision_models()


def child(request: dict, stdio: list[int] | None = None, close=()) -> None:
    """Become `python -m <module> <args>` (bsbench unless the request names another) as started in
    request's cwd with its environment (in a session of its own, as `subprocess.Popen(...,
    start_new_session=True)` starts one), its stdin, stdout and stderr `stdio` where given, else /dev/null
    and the request's files; never returns."""
    code = 1
    try:
        for thing in close:  # the server's sockets: a client waits for its own answer, not for a child
            thing.close()
        os.setsid()
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        if stdio is None:
            stdio = [os.open(os.devnull, os.O_RDONLY), os.open(request["stdout"], os.O_WRONLY | os.O_CREAT),
                     os.open(request["stderr"], os.O_WRONLY | os.O_CREAT)]
        for fd, opened in enumerate(stdio):
            os.dup2(opened, fd)
            if opened > 2:
                os.close(opened)
        sys.stdin = open(0, closefd=False)
        if os.environ.get("PYTHONUNBUFFERED"):  # as `python -u`: what a killed command wrote is kept
            import io

            sys.stdout, sys.stderr = (io.TextIOWrapper(io.FileIO(fd, "w", closefd=False), write_through=True,
                                                       errors="backslashreplace" if fd == 2 else "strict")
                                      for fd in (1, 2))
        extra = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
        sys.path[:] = [os.getcwd(), *extra, *BASE_PATH]
        import importlib

        import torch

        importlib.invalidate_caches()
        if os.environ.get("OMP_NUM_THREADS", "").isdigit():  # what OpenMP reads when a fresh process loads it
            torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
        # SIGINT as the command's starter left it (ignored for a script's background job), then what bsbench
        # reads of its start: this command's, not the zygote's (bsbench.core.process)
        signal.signal(signal.SIGINT, signal.SIG_IGN if request.get("sigint_ignored") else signal.default_int_handler)
        from bsbench.core import process

        process.started()
        sys.argv = ["bsbench", *request["args"]]
        import runpy

        try:
            runpy.run_module(request.get("module", "bsbench"), run_name="__main__", alter_sys=True)
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


def say(message: dict, to: socket.socket | None = None) -> None:
    line = (json.dumps(message) + "\n").encode()
    if to is None:
        os.write(1, line)
    else:
        try:
            to.sendall(line)
        except OSError:  # the client has gone: its child is killed below
            pass


def receive(connection: socket.socket) -> tuple[dict, list[int]]:
    """A client's request line and the descriptors sent with it."""
    data, fds, _, _ = socket.recv_fds(connection, 1 << 20, 3)
    while not data.endswith(b"\n"):
        more = connection.recv(1 << 20)
        if not more:
            raise ConnectionError("the client went away mid-request")
        data += more
    return json.loads(data), fds


def main() -> None:
    preload()
    server = None
    if len(sys.argv) > 1:
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        server.bind(sys.argv[1])
        server.listen(16)
    # pid -> the client waiting for it: None for stdin's requests, False once the client has gone
    children: dict[int, socket.socket | None | bool] = {}
    pending = b""
    while True:
        clients = [c for c in children.values() if c]
        ready = select.select([0, *([server] if server else []), *clients], [], [], 0.05)[0]
        for source in ready:
            if source == 0:
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
                        child(request, close=[c for c in (server, *clients) if c is not None])
                    children[pid] = None
                    say({"started": pid})
            elif source is server:
                connection, _ = server.accept()
                try:
                    request, fds = receive(connection)
                except (OSError, ValueError):
                    connection.close()
                    continue
                sys.stdout.flush()
                sys.stderr.flush()
                pid = os.fork()
                if pid == 0:
                    child(request, fds, close=[server, connection, *clients])
                for fd in fds:
                    os.close(fd)
                children[pid] = connection
                say({"started": pid}, connection)
            elif not source.recv(1):  # a client gone (SIGKILL) before its child ended: the child goes too
                pid = next(p for p, c in children.items() if c is source)
                try:
                    os.killpg(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                source.close()
                children[pid] = False
        else:
            for pid, client in list(children.items()):
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    del children[pid]
                    code = os.waitstatus_to_exitcode(status)
                    if client is None:
                        say({"ended": pid, "returncode": code})
                    elif client is not False:
                        say({"returncode": code}, client)
                        client.close()
            continue
        break
    for pid in children:
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


if __name__ == "__main__":
    main()
