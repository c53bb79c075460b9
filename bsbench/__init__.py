"""bsbench: do batch sizes have to be powers of two? Time it on your own hardware."""

import time

__version__ = "0.1.0"
# when this process started bsbench, before Hydra, torch or the sweep's planning: a sweep's elapsed clock
STARTED_AT = time.time()
