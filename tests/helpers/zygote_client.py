"""`$PYTHON` for the scripts the tests run (.ci/gpu-check, .ci/gpu-tune): `python zygote_client.py -m
bsbench ...` has the test session's preloaded interpreter (tests/helpers/zygote.py, whose socket
BSBENCH_ZYGOTE names) fork the command with this process's stdin, stdout, stderr, directory and
environment, and stands for it: it ends with the command's exit status, and SIGINT, SIGTERM or SIGHUP
sent to it (a terminal's, `timeout`'s) reach the command's process group. Killed outright, it takes
the command with it (the zygote sees it go). Anything else (`-c ...`, other modules) runs in this
interpreter, through exec. Stdlib only: it starts in milliseconds."""

import json
import os
import signal
import socket
import sys


def forwarded(args: list[str]) -> bool:
    return bool(os.environ.get("BSBENCH_ZYGOTE")) and len(args) >= 2 and args[0] == "-m" and (
        args[1] == "bsbench" or args[1].startswith("bsbench."))


def main() -> None:
    args = sys.argv[1:]
    if not forwarded(args):
        os.execv(sys.executable, [sys.executable, *args])
    connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    connection.connect(os.environ["BSBENCH_ZYGOTE"])
    # a script's background job starts with Ctrl-C ignored: so does its command, and Ctrl-C is not relayed
    ignored = signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    request = {"module": args[1], "args": args[2:], "cwd": os.getcwd(), "env": dict(os.environ),
               "sigint_ignored": ignored}
    socket.send_fds(connection, [(json.dumps(request) + "\n").encode()], [0, 1, 2])
    answers = connection.makefile("rb")
    pid = json.loads(answers.readline())["started"]

    def relay(sig, frame):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            pass

    for sig in (signal.SIGTERM, signal.SIGHUP) + (() if ignored else (signal.SIGINT,)):
        signal.signal(sig, relay)
    line = answers.readline()
    code = json.loads(line)["returncode"] if line else 1
    if code < 0:  # killed by a signal: so is this process, as the shell expects
        signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
    sys.exit(code)


if __name__ == "__main__":
    main()
