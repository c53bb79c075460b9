"""bsbench: do batch sizes have to be powers of two? Time it on your own hardware."""

import signal
import time

__version__ = "0.1.0"
# when this process started bsbench, before Hydra, torch or the sweep's planning: a sweep's elapsed clock
STARTED_AT = time.time()
# Ctrl-C ignored by whoever started this process (a script's background job, `python -m bsbench ... &`):
# it stays ignored for the whole sweep (bsbench.core.interrupt), as the shell asked
SIGINT_IGNORED = signal.getsignal(signal.SIGINT) is signal.SIG_IGN
