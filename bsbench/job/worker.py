"""One DDP rank of a job, started by torchrun from bsbench.job.ranks: `python -m bsbench.job.worker CONFIG DIR`.
Runs the job's resolved config once and writes this rank's outcome to DIR/rank<N>.json when there is
one to tell (rank 0's result, or this rank's failure); exits non-zero on failure so that torchrun
stops the other ranks."""

import os
import signal
import sys
from pathlib import Path

from omegaconf import OmegaConf

from bsbench.core.config import typed
from bsbench.core.fields import Status
from bsbench.core.results import write_json_atomic
from bsbench.job.console import configure_rank
from bsbench.job.ranks import die_with_parent
from bsbench.job.run import attempt


def main(config_file: str, ranks_dir: str) -> int:
    # a rank ends with torchrun, whatever ends torchrun: no orphan holds the GPU after its sweep died
    die_with_parent(signal.SIGKILL, os.getppid())
    cfg = typed(OmegaConf.load(config_file))
    # into the job's own log (Hydra's job log file, bsbench.log); the terminal as a job's
    configure_rank(str(Path(ranks_dir).parent / "bsbench.log"), cfg.verbose, os.environ.get("RANK", "?"))
    result = attempt(cfg)
    if result is not None:
        write_json_atomic(Path(ranks_dir) / f"rank{os.environ.get('RANK', '0')}.json", result)
    return 0 if result is None or result["status"] == Status.OK else 1


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))
