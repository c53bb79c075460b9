"""Multi-process DDP inside a Hydra job.

Lightning's `ddp` re-executes the command line once per extra device. Inside a Hydra multirun that
command line holds `-m` and the whole sweep, so every extra rank would launch the sweep again. bsbench
therefore starts a job's ranks itself, with torch's elastic launcher (torchrun), each rank running
exactly this job's composed and resolved config (`bsbench.job.worker`) and nothing else. torchrun also
gives the failure semantics a benchmark needs: when one rank fails, the others are terminated instead
of waiting forever in a collective. Lightning recognises torchrun's environment and starts no
processes of its own. Under SLURM (or torchrun started by the user) the cluster starts the ranks, and
bsbench leaves them to Lightning.
"""

import ctypes
import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading
from collections import deque
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.strategies.launchers.subprocess_script import _SubprocessScriptLauncher
from omegaconf import DictConfig, OmegaConf

from bsbench.core import interrupt
from bsbench.core.errors import UserError
from bsbench.core.fields import Status
from bsbench.core.results import write_json_atomic
from bsbench.job.console import LOG_ONLY
from bsbench.job.record import unfinished

log = logging.getLogger("bsbench")
RANKS_DIR = "ranks"
TERMINATE_TIMEOUT_S = 60


def processes_to_start(cfg: DictConfig) -> int:
    """How many processes this job must start itself: the local device count when Lightning would
    re-execute the command line for them (its subprocess-script DDP with nobody else starting ranks),
    else 0. Lightning decides which strategy `auto` and `devices` become, so ask Lightning, unless the
    job asks for one device on one node: that never starts processes, and most jobs are such."""
    if cfg.devices == 1 and cfg.trainer.num_nodes == 1:
        return 0
    lightning_log = logging.getLogger("lightning.pytorch")
    level = lightning_log.level
    lightning_log.setLevel(logging.WARNING)  # the real Trainer reports devices; this probe need not
    try:
        probe = L.Trainer(accelerator=cfg.accelerator, devices=cfg.devices, strategy=cfg.strategy,
                          num_nodes=cfg.trainer.num_nodes, logger=False, enable_checkpointing=False,
                          enable_progress_bar=False, enable_model_summary=False)
    finally:
        lightning_log.setLevel(level)
    launcher = probe.strategy.launcher
    if not isinstance(launcher, _SubprocessScriptLauncher) or launcher.cluster_environment.creates_processes_externally:
        return 0
    if probe.num_nodes > 1:
        raise UserError(f"trainer.num_nodes={probe.num_nodes} needs a cluster to start the ranks on every node; "
                        "run the sweep with hydra/launcher=slurm, or use trainer.num_nodes=1.")
    return probe.num_devices if probe.num_devices > 1 else 0


def run_ranks(cfg: DictConfig, run_dir: Path, processes: int) -> dict:
    """Run the job in `processes` ranks under torchrun; return rank 0's result, or the failure."""
    ranks_dir = run_dir / RANKS_DIR
    ranks_dir.mkdir(parents=True, exist_ok=True)
    for stale in ranks_dir.glob("rank*.json"):  # a resumed job's earlier attempt
        stale.unlink()
    config_file = ranks_dir / "config.yaml"
    OmegaConf.save(cfg, config_file, resolve=True)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}",
               "--max-restarts=0", "-m", "bsbench.job.worker", str(config_file), str(ranks_dir)]
    log.info("starting %d ranks: %s", processes, " ".join(command), extra={LOG_ONLY: True})
    parent = os.getpid()
    # torchrun dies with this process, however it dies (SIGKILL included), and takes its ranks along
    proc = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, errors="replace",
                            env={**os.environ, "OMP_NUM_THREADS": str(threads_per_rank(processes))},
                            preexec_fn=lambda: die_with_parent(signal.SIGTERM, parent))
    tail = _Tail(proc.stderr)
    tail.start()
    try:
        returncode = proc.wait()
        tail.join(timeout=10)
    except KeyboardInterrupt:
        proc.terminate()  # torchrun passes it on to every rank
        try:
            proc.wait(timeout=TERMINATE_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
        raise
    finally:
        if not tail.is_alive():
            proc.stderr.close()
    outcomes = {}
    for path in ranks_dir.glob("rank*.json"):
        outcomes[int(path.stem[4:])] = json.loads(path.read_text())
        path.unlink()  # consumed: the job's one result is its results.json
    if returncode == 0 and outcomes.get(0, {}).get("status") == Status.OK:
        return outcomes[0]
    # A rank killed by a signal (the out-of-memory killer's SIGKILL, a segfault) is the cause whatever
    # the others reported: it could report nothing, and their errors are its echoes in broken
    # collectives (one of them may be written before torchrun notices the death). SIGTERM and SIGINT
    # are torchrun stopping the others.
    killed = _killed_rank("".join(tail.lines)) if returncode != 0 else None
    failure = first_failure(outcomes)
    if failure and not killed:
        return failure
    result = unfinished(cfg, Status.FAILED)
    if killed:
        rank, signum = killed
        result.update(error_type="RankKilled", failed_rank=rank,
                      error=f"rank {rank} was killed by signal {signum} ({_signal_name(signum)}), e.g. by the kernel's "
                            "out-of-memory killer")
    else:
        result.update(error_type="RankFailure", error=f"torchrun exited with status {returncode} and no rank "
                      "reported an error")
    return result


def first_failure(outcomes: dict[int, dict]) -> dict | None:
    """The failure that ended a job of several ranks, with its `failed_rank`: the rank that failed first
    (the others fail after it, in broken collectives, or are stopped); None where no rank failed."""
    failures = [(rank, o) for rank, o in outcomes.items() if o["status"] in (Status.FAILED, Status.OOM)]
    if not failures:
        return None
    rank, failure = min(failures, key=lambda ro: ro[1].get("failed_at") or float("inf"))
    return {**failure, "failed_rank": rank}


def cluster_rank() -> tuple[int, int] | None:
    """(global rank, world size) of this process where SLURM started the job's ranks, several of them
    (hydra/launcher=slurm: one task per device on each node); None otherwise."""
    from lightning.fabric.plugins.environments import SLURMEnvironment

    if not SLURMEnvironment.detect():
        return None
    world = int(os.environ.get("SLURM_NTASKS", "1"))
    return (int(os.environ.get("SLURM_PROCID", "0")), world) if world > 1 else None


def slurm_job_id() -> str | None:
    """The SLURM job this process belongs to, as squeue, scancel and submitit's log folders name it
    (`<array job>_<task>` for a job of a sweep's array); None outside SLURM."""
    array, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    return f"{array}_{task}" if array and task else os.environ.get("SLURM_JOB_ID")


def rank_outcomes(run_dir: Path, job: str | None) -> dict[int, dict]:
    """The outcomes the ranks of SLURM job `job` wrote into the job's folder (an earlier attempt's
    files, from a resumed sweep, are not this job's)."""
    outcomes = {}
    for path in (Path(run_dir) / RANKS_DIR).glob("rank*.json"):
        try:
            outcome = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if outcome.get("slurm_job_id") == job:
            outcomes[int(path.stem[4:])] = outcome
    return outcomes


def settle_cluster_rank(result: dict | None, run_dir: Path, rank: int) -> dict | None:
    """A rank of a job whose ranks SLURM started, after its run: a rank that did not finish leaves its
    outcome in the job's ranks/ folder (no rank but 0 writes results.json); rank 0 returns what the job's
    result is: its own, or the failure that ended the job where any rank failed (the first to fail; an
    interruption of rank 0 is then the cluster stopping the others: srun --kill-on-bad-exit)."""
    if result is None:  # a rank other than 0 that finished
        return None
    if result["status"] != Status.OK:
        ranks_dir = Path(run_dir) / RANKS_DIR
        ranks_dir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(ranks_dir / f"rank{rank}.json", result)
    if rank != 0:
        return None
    return first_failure(rank_outcomes(run_dir, result.get("slurm_job_id"))) or result


def threads_per_rank(processes: int) -> int:
    """The threads each rank gets: this process's intra-op threads shared out, so that on a CPU a job
    of N ranks computes with as many threads in all as a job of one process (torchrun's default, one
    thread per rank, would compare thread counts, not device counts)."""
    threads = torch.get_num_threads()
    if threads % processes:
        log.warning("%d ranks cannot share %d threads evenly: each rank gets %d, %d in all against %d for one "
                    "process (set OMP_NUM_THREADS to a multiple of %d for a fair comparison)", processes, threads,
                    max(1, threads // processes), max(1, threads // processes) * processes, threads, processes)
    return max(1, threads // processes)


def die_with_parent(signum: int, parent: int) -> None:
    """Linux: have the kernel send `signum` to this process when its parent ends, even by SIGKILL,
    which signals nothing itself (PR_SET_PDEATHSIG); if the parent is already gone, end now."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signum)  # 1: PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: a killed sweep can leave ranks behind there
        return
    if os.getppid() != parent:
        os.kill(os.getpid(), signum)


class _Tail(threading.Thread):
    """Passes torchrun's stderr on as it comes and keeps its end, where torchrun names a failed rank.
    Once the sweep is stopping (Ctrl-C, SIGTERM), what torchrun says about its own stop (a
    SignalException traceback) goes to the job's log only: the terminal gets bsbench's one line."""

    def __init__(self, stream):
        super().__init__(name="bsbench-torchrun-stderr", daemon=True)
        self.stream, self.lines = stream, deque(maxlen=400)

    def run(self) -> None:
        for line in self.stream:
            if interrupt.requested():
                log.info("torchrun: %s", line.rstrip("\n"), extra={LOG_ONLY: True})
            else:
                sys.stderr.write(line)
            self.lines.append(line)


def _killed_rank(text: str) -> tuple[int, int] | None:
    """(rank, signal) of a rank that a signal other than torchrun's own stop (SIGTERM, SIGINT) ended,
    from torchrun's failure summary: the root cause first, then the other failures."""
    cause = text.find("Root Cause")
    ordered = text[cause:] + text[:cause] if cause >= 0 else text
    for rank, code in re.findall(r"rank\s*:\s*(\d+).*?exitcode\s*:\s*(-?\d+)", ordered, re.S):
        if int(code) < 0 and -int(code) not in (signal.SIGTERM, signal.SIGINT):
            return int(rank), -int(code)
    return None


def _signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return "unknown"
