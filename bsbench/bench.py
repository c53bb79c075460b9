"""The overhead benchmark: how much of the hardware's speed does bsbench's training step keep?

    python -m bsbench.bench [--model mobilenet_v3_small] [--image-size 64] [--batch-size 32] ...
    python -m bsbench.bench --devices 2 ...     # the same with 2 DDP ranks (gloo on a CPU, NCCL on GPUs)

In one process (one per rank), on the same network, batch, precision and in-memory data, it
alternates a plain hand-written PyTorch training loop (the floor: index a batch, resize it on the
device, forward, backward, Adam step; under DDP, the same with DistributedDataParallel) with bsbench's
own path (mode=throughput through Lightning, with bsbench's callbacks), and prints their throughput
ratio with its 95% interval, and a third side, the floor: the same loop on one batch already on the device,
with no input work at all (no indexing, transfer or resize). bsbench runs with the data loading a user
gets (`data.num_workers`, `data.pin_memory` as configured by default; `--num-workers` changes it). Next
to it, the input pipeline's rate for both resize paths, so the
headroom between loading and training is visible, and under DDP the cost of the one collective
Lightning adds to every step. Not a test: it prints figures.
"""

import argparse
import os
import subprocess
import sys
from pathlib import Path

from bsbench.core.config import Data

PRECISIONS = ("16-mixed", "32-true", "bf16-mixed")  # bsbench.job.overhead.AUTOCAST's


def parse(argv) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bsbench.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="mobilenet_v3_small")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32, help="per device")
    parser.add_argument("--precision", default="32-true", choices=sorted(PRECISIONS))
    parser.add_argument("--accelerator", default="auto")
    parser.add_argument("--devices", type=int, default=1, help="DDP ranks on this machine (started with torchrun)")
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--fused-adam", action="store_true", help="Adam(fused=True) on both sides")
    parser.add_argument("--num-workers", type=int, default=Data.num_workers,
                        help="bsbench's DataLoader workers (default: %(default)s, what a run on the device path gets)")
    # Many short rounds: on a shared 2-core VM each measurement scatters by about 3% whatever its
    # length, so 48 rounds of 10 steps narrow the interval more than 16 of 30 in the same time.
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps per measurement")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per measurement")
    parser.add_argument("--rounds", type=int, default=48,
                        help="rounds of one measurement per side; in a multiple of 6, each side runs first, second "
                             "and third equally often")
    parser.add_argument("--images", type=int, default=2048, help="synthetic images held in memory")
    parser.add_argument("--out", type=Path, help="write every figure as JSON here")
    args = parser.parse_args(argv)
    if args.rounds < 2:
        parser.error(f"--rounds={args.rounds}: use at least 2 (an interval needs two pairs), best a multiple of 6, "
                     "e.g. 48")
    if args.devices < 1:
        parser.error(f"--devices={args.devices}: use 1, or the number of DDP ranks to start, e.g. 2")
    return args


def main(argv=None) -> int:
    """Arguments first, then the ranks (torchrun) or the measurement: a mistake is told, and the ranks
    start, without this process importing torch."""
    argv = sys.argv[1:] if argv is None else argv
    args = parse(argv)
    if args.devices > 1 and "LOCAL_RANK" not in os.environ:  # start the ranks, each running this benchmark
        return subprocess.call([sys.executable, "-m", "torch.distributed.run", "--standalone",
                                f"--nproc-per-node={args.devices}", "-m", "bsbench.bench", *argv])
    from bsbench.job.overhead import run

    return run(args)


if __name__ == "__main__":
    raise SystemExit(main())
