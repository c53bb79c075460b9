"""A sweep's jobs as SLURM jobs (hydra/launcher=slurm): submitted through submitit as one job array,
each run by Hydra's submitit launcher on the nodes, and followed from the submitting process until
every one has ended, whatever ended it:

- a job that finishes has written its own result (its rank 0 does; bsbench.job.job); the submitting
  process prints its line as it ends, like a local sweep;
- a job SLURM ended before it could write one (cancelled, out of time, its node lost, a rank killed)
  gets one from here: the first failure its ranks wrote, else `interrupted` (cancelled, preempted, out
  of time) or `failed`, with the state SLURM ended it in. A job's interruption is told with the state
  too (`scancel`, the time limit), and `resume=` runs it again;
- Ctrl-C (or SIGTERM) in the submitting process cancels the sweep's jobs, waits for them to record
  their interruption, and exits 130 as a local sweep does.

Job states come from `sacct`, or from `squeue` on clusters without accounting (where sacct fails),
polled at a pace that slows as the sweep goes on; a job whose ranks all returned needs no poll."""

import json
import logging
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

from hydra.core.hydra_config import HydraConfig
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher
from omegaconf import DictConfig, OmegaConf, open_dict

from bsbench.core.config import typed
from bsbench.core.errors import UserError
from bsbench.core.fields import Status
from bsbench.core.results import read_results, write_json_atomic
from bsbench.job.console import LOG_ONLY, progress
from bsbench.job.identity import job_id
from bsbench.job.record import unfinished
from bsbench.modes import results_of

log = logging.getLogger("bsbench")

# States in which a SLURM job may still run; any other (COMPLETED, CANCELLED, TIMEOUT, FAILED,
# NODE_FAIL, OUT_OF_MEMORY, PREEMPTED, BOOT_FAIL, DEADLINE) is the end of it.
ACTIVE = {"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED",
          "RESIZING", "SIGNALING", "STAGE_OUT", "STOPPED", "RESV_DEL_HOLD", "POWER_UP_NODE"}
# Ended by the cluster or a person, not by a fault of the run: the job is `interrupted`, resume= runs it.
STOPPED = {"CANCELLED", "TIMEOUT", "PREEMPTED", "DEADLINE"}
SAYS = {"CANCELLED": "was cancelled (scancel)", "TIMEOUT": "reached its time limit (hydra.launcher.timeout_min)",
        "PREEMPTED": "was preempted", "DEADLINE": "reached its deadline"}
# submitit's own parameters of any executor; every other key of hydra.launcher is a SLURM one (slurm_<key>)
GENERIC = {"name", "timeout_min", "mem_gb", "nodes", "cpus_per_task", "gpus_per_node", "tasks_per_node",
           "stderr_to_stdout"}
CANCEL_WAIT_S = 90  # after Ctrl-C: how long the cancelled jobs get to record their interruption
RECORD_WAIT_S = 30  # of that, for one job SLURM calls cancelled while its ranks still record their stop


class Runner(SlurmLauncher):
    """What runs on the nodes: Hydra's job, as hydra-submitit-launcher runs it, never requeued. submitit
    requeues a job at SLURM's warning signal where its callable can checkpoint; a bsbench run has nothing
    to go on from (once the job runs, bsbench records the warning as an interruption instead)."""

    def checkpoint(self, *args: Any, **kwargs: Any) -> None:
        return None


@dataclass
class Submitted:
    job: Any  # a submitit SlurmJob
    overrides: list[str]
    position: int  # Hydra's job number
    tasks: int  # nodes x tasks per node: one per rank

    @property
    def id(self) -> str:
        return str(self.job.job_id)


def launch(launcher, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> list:
    """Submit the jobs and follow them to their end; the JobReturns Hydra's sweeper expects."""
    from hydra.core.singleton import Singleton
    from hydra.core.utils import JobReturn, JobStatus

    # one array per set of SLURM parameters: a job's nodes, tasks and GPUs follow its own trainer.num_nodes,
    # devices and accelerator (a sweep over them needs other allocations), and its logs its claimed directory
    groups: dict[str, tuple[dict, list[tuple]]] = {}
    for overrides, n in zip(job_overrides, range(initial_job_idx, initial_job_idx + len(job_overrides))):
        params = _params(launcher, list(overrides))
        groups.setdefault(json.dumps(params, sort_keys=True, default=str), (params, []))[1].append((list(overrides), n))
    submitted = []
    for params, members in groups.values():
        runner = Runner(**params)
        runner.setup(hydra_context=launcher.hydra_context, task_function=launcher.task_function,
                     config=launcher.config)
        arguments = [(o, "hydra.sweep.dir", n, f"job_id_for_{n}", Singleton.get_state()) for o, n in members]
        tasks = int(params.get("nodes") or 1) * int(params.get("tasks_per_node") or 1)
        jobs = submit(params, runner, arguments)
        submitted += [Submitted(job, o, n, tasks) for job, (o, n) in zip(jobs, members)]
    sweep_dir = Path(str(launcher.config.hydra.sweep.dir))
    arrays = sorted({s.id.split("_")[0] for s in submitted})
    log.info("submitted %d jobs to SLURM (job %s; squeue -j %s); their logs: %s", len(submitted), ", ".join(arrays),
             ",".join(arrays), Path(str(launcher.config.hydra.launcher.submitit_folder)).parent)
    for s in submitted:
        log.info("SLURM job %s: %s", s.id, " ".join(s.overrides), extra={LOG_ONLY: True})
    started, pending = time.time(), {s.id: s for s in submitted}
    try:
        with _sigterm_as_interrupt():
            for s, state in follow(submitted):
                results = settle(launcher, pending.pop(s.id), state)
                _tell(results, progress(len(submitted) - len(pending), len(submitted), started))
    except KeyboardInterrupt:
        cancel(launcher, list(pending.values()), sweep_dir)
    return [JobReturn(overrides=s.overrides, status=JobStatus.COMPLETED, _return_value=None) for s in submitted]


_composed_params: dict[tuple, dict] = {}


def _params(launcher, overrides: list[str]) -> dict:
    """hydra.launcher as the job with these overrides resolves it (composed once per configuration: its
    repeats differ only in `repeat=` and their folder)."""
    key = tuple(o for o in overrides if not o.startswith(("repeat=", "hydra.sweep.subdir=")))
    if key not in _composed_params:
        own = launcher.hydra_context.config_loader.load_sweep_config(launcher.config, overrides).hydra.launcher
        _composed_params[key] = {k: v for k, v in OmegaConf.to_container(own, resolve=True).items() if k != "_target_"}
    return _composed_params[key]


def refuse_if_running(config) -> None:
    """A resumed sweep whose earlier launch left SLURM jobs running (its submitting process was killed,
    or its session closed) would run them a second time into the same folders: refused, naming them."""
    folder = Path(str(config.hydra.launcher.submitit_folder)).parent
    ids = [p.name for p in folder.iterdir() if p.is_dir()] if folder.is_dir() else []
    running = sorted(job for job, state in (states_of(ids) or {}).items() if state in ACTIVE) if ids else []
    if running:
        raise UserError(f"resume={config.resume}: SLURM jobs {' '.join(running)} of this sweep still run; wait for "
                        f"them to end (squeue -j {','.join(sorted({j.split('_')[0] for j in running}))}) or cancel "
                        f"them (scancel {' '.join(running)}), then resume.")


def submit(params: dict, runner: Runner, arguments: list[tuple]) -> list:
    """The jobs, submitted as one array; sbatch's refusal (a partition or account that does not exist, a
    time limit over the partition's) or no sbatch at all ends the sweep in one line."""
    from submitit.core.utils import FailedJobError, FailedSubmissionError

    try:
        made = executor(params)
    except (AssertionError, NameError, ValueError, TypeError) as exc:  # submitit checks each name and type
        said = next((line for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
        raise UserError(f"a hydra.launcher setting is not one submitit takes ({said.strip()}); use e.g. "
                        "hydra.launcher.timeout_min=120 (`python -m bsbench --cfg hydra hydra/launcher=slurm` "
                        "lists them).") from None
    try:
        return made.map_array(runner, *zip(*arguments))
    except FileNotFoundError as exc:
        raise UserError(f"hydra/launcher=slurm needs SLURM's sbatch here ({exc.filename or 'sbatch'} was not found); "
                        "run the sweep on a machine of the cluster, e.g. its login node.") from None
    except (FailedJobError, FailedSubmissionError) as exc:
        said = next((line for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
        raise UserError(f"SLURM refused the sweep's jobs ({said.strip()}); check the hydra.launcher settings "
                        "(partition, account, qos, timeout_min, ...).") from None


def executor(params: dict):
    """submitit's SLURM executor with hydra.launcher's parameters, as Hydra's submitit launcher makes it,
    and srun told to end a job's other ranks when one exits with an error (else they wait in a collective
    until its timeout, half an hour)."""
    import submitit

    params = dict(params)
    folder, timeouts = params.pop("submitit_folder"), params.pop("max_num_timeout", 0)
    params["srun_args"] = [*(params.get("srun_args") or []), "--kill-on-bad-exit=1"]
    made = submitit.AutoExecutor(folder=folder, cluster="slurm", slurm_max_num_timeout=timeouts)
    made.update_parameters(**{key if key in GENERIC else f"slurm_{key}": value for key, value in params.items()})
    return made


def follow(submitted: list[Submitted], until: float = float("inf")) -> Iterator[tuple[Submitted, str]]:
    """Each job with the state it ended in, as it ends: when all its tasks returned (submitit's result
    files), or when SLURM says it ended (or no longer knows a job it listed: purged after it ended);
    until every job ended, or time.monotonic() passed `until`."""
    left = {s.id: s for s in submitted}
    seen: set[str] = set()
    started, polled = time.monotonic(), float("-inf")
    while left and time.monotonic() < until:
        for s in [s for s in left.values() if _returned(s.job, s.tasks)]:
            yield left.pop(s.id), "COMPLETED"
        now = time.monotonic()
        if left and now - polled >= _poll_interval(now - started):
            polled = now
            states = states_of(list(left))
            for s in list(left.values()):
                state = None if states is None else states.get(s.id, "" if s.id in seen else None)
                if state:
                    seen.add(s.id)
                if state == "" or (state and state not in ACTIVE):
                    yield left.pop(s.id), state or "UNKNOWN"
        if left:
            time.sleep(1)


def _returned(job, tasks: int) -> bool:
    return all(job.task(t).paths.result_pickle.exists() for t in range(tasks))


def _poll_interval(elapsed_s: float) -> float:
    """Seconds between two asks of SLURM: 2 at first, up to 60 in a long sweep (a scheduler serves many)."""
    return min(60.0, max(2.0, elapsed_s / 20))


_squeue_only = False  # sacct failed once: a cluster without accounting


def states_of(ids: list[str]) -> dict[str, str] | None:
    """SLURM's state of each job it knows of the given ones (`7_1`: `RUNNING`); None where SLURM could not
    be asked (the controller busy: ask again later)."""
    global _squeue_only
    arrays = ",".join(sorted({i.split("_")[0] for i in ids}))
    if not _squeue_only:
        asked = _ask(["sacct", "-X", "-n", "-P", "-o", "JobID,State", "-j", arrays])
        if asked is not None and asked.returncode == 0:
            return _parse(asked.stdout)
        _squeue_only = True  # sacct's complaint, once per poll, would tell a user nothing they can act on
    # squeue: every task of an array on its own line, ended ones too (for MinJobAge, 5 minutes by default)
    asked = _ask(["squeue", "-h", "-r", "--states=all", "-o", "%i|%T", "-j", arrays])
    if asked is None:
        return None
    if asked.returncode != 0:
        return {} if "Invalid job id" in asked.stderr else None  # purged: ended long enough ago
    return _parse(asked.stdout)


def _ask(command: list[str]) -> subprocess.CompletedProcess | None:
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None


def _parse(text: str) -> dict[str, str]:
    states = {}
    for line in text.splitlines():
        if "|" in line:
            job, state = line.split("|", 1)
            states[job.strip()] = (state.split() or ["UNKNOWN"])[0].rstrip("+")  # "CANCELLED by 0"
    return states


def settle(launcher, s: Submitted, state: str, why: str | None = None) -> list[dict]:
    """The job's results once it ended. Where it finished: those its rank 0 wrote. Where it did not: the
    first failure any of its ranks wrote (all of them have written by now, which rank 0 could not wait
    for), else rank 0's own result told with SLURM's state, else one made here from that state."""
    from bsbench.job.ranks import first_failure, rank_outcomes
    from bsbench.job.fit import with_utilization

    loaded, run_dir = _job_config(launcher, s)
    HydraConfig.instance().set_config(loaded)  # the job's config resolves as it did in the job
    cfg = typed(loaded)
    written = [r for r in read_results(run_dir) if r.get("slurm_job_id") == s.id]
    if written and (state == "COMPLETED" or all(r["status"] == Status.OK for r in written)):
        return written
    said = f"SLURM job {s.id} {why or SAYS.get(state, f'ended {state}')}"
    record = {"run_dir": str(run_dir), "overrides": [o for o in s.overrides if not o.startswith(("hydra.", "resume="))],
              "sweep_position": s.position, "job_id": job_id(cfg), "slurm_job_id": s.id, "slurm_state": state}
    failure = first_failure(rank_outcomes(run_dir, s.id))
    if failure is not None:
        told = [with_utilization(cfg, one) for one in results_of({**failure, **record})]
    elif written:
        told = [{**r, "slurm_state": state} for r in written]
        for r in told:
            if r["status"] == Status.INTERRUPTED and (state in STOPPED or why):
                r["error"] = said
    else:
        status = Status.INTERRUPTED if state in STOPPED or why else Status.FAILED
        made = {**unfinished(cfg, status), "error_type": "SlurmJobEnded",
                "error": f"{said} before its rank 0 wrote a result; its log: {_log_of(s)}"}
        told = [with_utilization(cfg, one) for one in results_of({**made, **record})]
    for r in told:
        Path(r["run_dir"]).mkdir(parents=True, exist_ok=True)
        write_json_atomic(Path(r["run_dir"]) / "results.json", r)
    return told


def _job_config(launcher, s: Submitted) -> tuple[DictConfig, Path]:
    """The job's config as the sweep composed it, and its folder."""
    loaded = launcher.hydra_context.config_loader.load_sweep_config(launcher.config, s.overrides)
    run_dir = Path(str(loaded.hydra.sweep.dir)) / str(loaded.hydra.sweep.subdir)
    with open_dict(loaded):
        loaded.hydra.runtime.output_dir = str(run_dir)
    return loaded, run_dir


def _await_record(launcher, s: Submitted, until: float) -> None:
    """A cancelled job that had started: SLURM calls it CANCELLED at once, while its ranks, signalled, still
    record their stop (within SLURM's KillWait); wait for rank 0's result or a rank's failure, until `until`."""
    from bsbench.job.ranks import first_failure, rank_outcomes

    if not Path(_log_of(s)).exists():  # never started: nothing of it will record anything
        return
    run_dir = _job_config(launcher, s)[1]
    while time.monotonic() < until:
        if any(r.get("slurm_job_id") == s.id for r in read_results(run_dir)) or \
                first_failure(rank_outcomes(run_dir, s.id)) is not None:
            return
        time.sleep(0.5)


def _log_of(s: Submitted) -> str:
    return str(s.job.paths.stderr).replace("%t", "0")


def _tell(results: list[dict], where: tuple[str, str]) -> None:
    from bsbench.modes import MODES

    for r in results:  # a compare job's: one per compared arm
        mode = MODES.get(r.get("mode"), MODES["train"])
        log.info("%s [SLURM job %s]", mode.result_line(r, where), r.get("slurm_job_id"))


def cancel(launcher, submitted: list[Submitted], sweep_dir: Path) -> None:
    """Ctrl-C: cancel every job of the sweep, give them a moment to record their interruption (a second
    Ctrl-C does not wait), make a result for each job that recorded none, report, exit 130."""
    from bsbench.report.write import write_report

    ids = [s.id for s in submitted]
    if ids:
        print(f"\nbsbench: interrupted; cancelling the sweep's SLURM jobs (scancel {' '.join(ids)})",
              file=sys.stderr, flush=True)
        _ask(["scancel", *ids])
    why = "was cancelled: its sweep was interrupted"
    left = {s.id: s for s in submitted}
    until = time.monotonic() + CANCEL_WAIT_S
    try:
        for s, state in follow(submitted, until=until):
            if state != "COMPLETED":
                _await_record(launcher, s, min(until, time.monotonic() + RECORD_WAIT_S))
            settle(launcher, left.pop(s.id), state, why=why)
    except KeyboardInterrupt:
        pass
    for s in left.values():  # still ending: what it records itself replaces this
        settle(launcher, s, "CANCELLED", why=why)
    write_report([sweep_dir])
    print(f"bsbench: interrupted; finished results are kept in {sweep_dir}; resume with resume={sweep_dir}",
          file=sys.stderr, flush=True)
    sys.exit(130)


@contextmanager
def _sigterm_as_interrupt():
    """SIGTERM to the submitting process (a closed session's kill) cancels the sweep as Ctrl-C does."""
    def interrupt(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
