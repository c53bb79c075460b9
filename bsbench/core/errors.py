"""A user's mistake: one sentence naming the setting and what would work, exit status 2."""

import sys


class UserError(Exception):
    """A problem the user can fix from the command line; its message is one sentence naming the
    setting and what would work, and it is printed without a traceback."""


def fail(err: UserError) -> None:
    """One line on stderr, exit status 2, nothing written."""
    print(f"bsbench: error: {err}", file=sys.stderr, flush=True)
    sys.exit(2)


def first_line(exc: BaseException) -> str:
    """`Type: the first line of its message`: why something could not be counted or built, in one line."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__
