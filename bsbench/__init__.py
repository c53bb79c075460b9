"""bsbench: do batch sizes have to be powers of two? Time it on your own hardware."""

__version__ = "0.1.0"
