"""The noise sentinel: how busy the machine was while a job ran, apart from the job itself.

A benchmark taken on a machine that other work shares runs slower and scatters more than the machine
can give (three bsbench processes of two threads each on 2 cores: 12-16 samples/s against 176-231
alone), and its figures do not show it. So each job records the machine's 1-minute load average and
its cores, the cores' worth of CPU time the whole machine and other processes spent while it ran
(`machine_cpu_load`, `other_cpu_load`, from /proc on Linux: the machine's busy time, and that less
this job's own processes'), and on a GPU the other processes on its device (bsbench.training.telemetry,
through NVML). A run is `busy` when its machine had no core to spare and other processes held some of
them, or when others shared its GPU; `busy_reason` says which. bsbench warns once per sweep when a
run was busy or its step times scattered widely, and the summary, the plots and the verdict mark what
was measured on a busy machine.

A job's own processes: itself and its descendants (DDP ranks, loader workers), and every process
that carries this sweep's BSBENCH_FAMILY in its environment (a SLURM job's tasks on one node; the
tests declare a whole test session one family). Stdlib only."""

import logging
import os
import threading
import time

log = logging.getLogger("bsbench")

FAMILY_ENV = "BSBENCH_FAMILY"
OTHERS = 0.5  # CPU cores' worth of other processes' time that makes a saturated machine busy
SATURATED = 0.9  # the share of the machine's cores in use above which it has none to spare
SCATTER = 0.5  # step times' standard deviation over their mean above which they scatter widely
SCATTER_STEPS = 10  # the timed steps a standard deviation needs to be read that way


def claim_family() -> None:
    """Name this process's family (what it starts inherits it), unless a parent already did."""
    os.environ.setdefault(FAMILY_ENV, f"{os.getpid()}-{time.time_ns()}")


def _machine_ticks() -> int | None:
    """CPU time the whole machine spent busy since boot, in clock ticks (/proc/stat: user, nice, system,
    irq, softirq, steal; guest time is inside user)."""
    try:
        with open("/proc/stat") as f:
            values = [int(v) for v in f.readline().split()[1:9]]
    except (OSError, ValueError):
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = values
    return user + nice + system + irq + softirq + steal


def _processes() -> dict[int, tuple[int, int, int]]:
    """Every process: pid -> (parent pid, start time, CPU time so far), times in clock ticks."""
    found = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                stat = f.read()
        except OSError:  # ended meanwhile
            continue
        fields = stat[stat.rfind(")") + 2:].split()  # after the command name, which may hold spaces
        try:  # from field 3 of proc(5): ppid is its 4th, utime and stime the 14th and 15th, starttime the 22nd
            found[int(name)] = (int(fields[1]), int(fields[19]), int(fields[11]) + int(fields[12]))
        except (IndexError, ValueError):
            continue
    return found


def _carries(pid: int, token: bytes) -> bool:
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            return token in f.read().split(b"\0")
    except OSError:  # another user's, or ended
        return False


class Watch:
    """The machine's load while a job runs: start() before it, stop() after it gives the fields. A thread
    reads every process's CPU time each INTERVAL seconds and adds up what the job's own processes spent
    between readings, so that a process that ends (a DDP rank, a SLURM task) takes at most one interval
    of its time with it."""

    INTERVAL = 0.5

    def __init__(self):
        self._token = f"{FAMILY_ENV}={os.environ.get(FAMILY_ENV, '')}".encode() if os.environ.get(FAMILY_ENV) else None
        self._carriers: dict[tuple[int, int], bool] = {}  # (pid, start time) -> whether it is of the family
        self._last: dict[int, tuple[int, int, int]] = {}
        self._ours = 0
        self._begin = None  # (monotonic time, the machine's busy ticks)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="bsbench-noise", daemon=True)

    def _family(self, processes: dict) -> set[int]:
        """This process, its descendants, and the processes that carry its family's name, with theirs."""
        children: dict[int, list[int]] = {}
        for pid, (parent, _, _) in processes.items():
            children.setdefault(parent, []).append(pid)
        todo = [os.getpid()]
        if self._token is not None:
            for pid, (_, started, _) in processes.items():
                if (pid, started) not in self._carriers:
                    self._carriers[pid, started] = _carries(pid, self._token)
                if self._carriers[pid, started]:
                    todo.append(pid)
        ours = set()
        while todo:
            pid = todo.pop()
            if pid not in ours and pid in processes:
                ours.add(pid)
                todo += children.get(pid, [])
        return ours

    def _read(self) -> None:
        processes = _processes()
        for pid in self._family(processes):
            before = self._last.get(pid)
            same = before is not None and before[1] == processes[pid][1]  # not a new process under an old pid
            self._ours += processes[pid][2] - (before[2] if same else 0)
        self._last = processes

    def _loop(self) -> None:
        while not self._stop.wait(self.INTERVAL):
            try:
                self._read()
            except OSError:
                return

    def start(self) -> "Watch":
        machine = _machine_ticks()
        if machine is None:
            return self
        try:
            self._last = _processes()
        except OSError:
            return self
        self._begin = (time.monotonic(), machine)
        self._thread.start()
        return self

    def stop(self) -> dict:
        try:
            load = round(os.getloadavg()[0], 2)
        except (AttributeError, OSError):  # not on this system
            load = None
        machine = other = None
        if self._begin is not None:
            self._stop.set()
            self._thread.join(timeout=5)
            try:
                self._read()
                busy = _machine_ticks() - self._begin[1]
                per_second = os.sysconf("SC_CLK_TCK") * max(1e-9, time.monotonic() - self._begin[0])
                machine = round(busy / per_second, 2)
                other = round(min(max(0.0, (busy - self._ours) / per_second), machine), 2)
            except (OSError, TypeError):
                pass
        return {"load_avg_1m": load, "machine_cpu_load": machine, "other_cpu_load": other}


def judge(result: dict) -> dict:
    """`busy` and `busy_reason` of a finished run: busy where the machine's CPU cores were nearly all in use
    (SATURATED) and other processes held at least half a core of them, or other processes used its GPU.
    Null where the run could not tell how busy the machine was."""
    other, machine, cores = result.get("other_cpu_load"), result.get("machine_cpu_load"), result.get("cpu_count")
    gpu_others = result.get("gpu_other_processes")
    if (other is None or not cores) and gpu_others is None:
        return {"busy": None, "busy_reason": None}
    reasons = []
    if gpu_others:
        reasons.append(f"{gpu_others} other {'process' if gpu_others == 1 else 'processes'} used its GPU")
    if other is not None and cores and other >= OTHERS and (machine or 0) >= SATURATED * cores:
        reasons.append(f"other processes kept {other:.1f} of the machine's {cores} CPU cores busy while all of them "
                       "were in use")
    return {"busy": bool(reasons), "busy_reason": "; ".join(reasons) or None}


def scatter(result: dict) -> float | None:
    """The step times' standard deviation over their mean, where enough steps were timed to tell."""
    mean, sd, steps = result.get("step_time_mean_ms"), result.get("step_time_sd_ms"), result.get("timed_steps")
    if not (mean and sd is not None and steps and steps >= SCATTER_STEPS):
        return None
    return sd / mean


_warned = False  # once per process: a sweep's jobs run in its process (submitit's each in its own)


def warn_once(result: dict, what: str) -> None:
    """The sweep's one warning that a run was measured on a busy machine or that its step times scattered
    widely: which run, why, what to do. `what`: the run, as the terminal names it (`job 3 of 16`)."""
    global _warned
    spread = scatter(result)
    problems = [f"it was measured on a busy machine ({result['busy_reason']})"] if result.get("busy") else []
    if spread is not None and spread > SCATTER:
        problems.append(f"its step times scattered widely (their standard deviation was {spread:.0%} of their mean)")
    if _warned or not problems:
        return
    _warned = True
    cpu = ", or give bsbench only the free cores (OMP_NUM_THREADS=<free cores>)" if result.get("device_type") == "cpu" \
        else ""
    log.warning("bsbench: warning: %s: %s, so its figures are slower or noisier than this machine gives when quiet; "
                "stop the other work or wait for it to end%s (said once per sweep; summary.md, the plots and the verdict "
                "mark every run measured on a busy machine).", what, " and ".join(problems), cpu)
