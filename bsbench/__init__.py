"""bsbench: do batch sizes have to be powers of two? Time it on your own hardware."""

from bsbench.core import process

__version__ = "0.1.0"
process.started()  # when bsbench started in this process, and what it was given (bsbench.core.process)
