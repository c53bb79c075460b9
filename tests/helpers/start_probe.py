"""What a command forked by the tests' zygote was given at its start, as bsbench read it
(bsbench.core.process), and what bsbench's handlers make of it: one JSON line (tests/test_failures.py)."""

import json
import signal

from bsbench.core import interrupt, process

interrupt.install()
print(json.dumps({"sigint_ignored": process.SIGINT_IGNORED, "started_at": process.STARTED_AT,
                  "still_ignored": signal.getsignal(signal.SIGINT) is signal.SIG_IGN}))
