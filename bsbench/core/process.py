"""What this process was given when bsbench started in it, read once at the start and kept here: the
one piece of state bsbench sets at import time. `bsbench/__init__.py` reads it (`started()`) as the
package is first imported, before Hydra, torch or the sweep's planning run.

A process forked from one that imported bsbench already (the tests' zygote, tests/helpers/zygote.py)
must call `started()` again as it becomes a command of its own: these values are the command's, not
its parent's. Nothing else in bsbench is set at import time from the process's surroundings
(tests/test_imports.py checks that this module is where such state lives)."""

import signal
import time

# when this process started bsbench: a sweep's elapsed clock starts here
STARTED_AT = 0.0
# Ctrl-C ignored by whoever started this process (a script's background job, `python -m bsbench ... &`):
# it stays ignored for the whole sweep (bsbench.core.interrupt), as the shell asked
SIGINT_IGNORED = False


def started() -> None:
    """Read the process's start: now, and whether SIGINT is ignored (before bsbench installs its handler)."""
    global STARTED_AT, SIGINT_IGNORED
    STARTED_AT = time.time()
    SIGINT_IGNORED = signal.getsignal(signal.SIGINT) is signal.SIG_IGN
