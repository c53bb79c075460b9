"""mode=profile: where a training step's time goes, operator by operator.

torch.profiler traces `profile.repeat` profiles of the steady state: after `timing.warmup_steps`
training steps, each profile is `profile.warmup` untraced steps then `profile.active` traced ones,
saved as `profile/bs<N>_p<k>.pt.trace.json` in the job's folder (Chrome trace format: Perfetto and
TensorBoard's profiler open it). Every figure in the result is read back from those files
(`read_trace`), so what the report says is what the trace shows:

- on a GPU, the kernels (and memory copies and sets) by their time on the device;
- on a CPU, where no device time exists, the `aten::` operators by their self time on the CPU (the
  time inside an operator less the time inside the operators it called), named ranges such as
  `ProfilerStep#7` and Lightning's left out.

Each operator's time is given per sample (per image of the batch), per profile, with its share of
the step (the traced steps' wall-clock, `ProfilerStep#*`)."""

import errno
import json
import logging
import os
import re
import shutil
import sys
import tempfile
from collections import defaultdict
from contextlib import contextmanager
from pathlib import Path

import lightning as L
from torch.profiler import ProfilerActivity, profile, schedule

from bsbench.training.parts import samples_in

FULL_BELOW = 1 << 20  # free bytes under which a trace that could not be written was lost to a full disk

# what the profiler's native library says: the job's log only (an INFO record of another library's
# logger never reaches the terminal, bsbench.job.console)
kineto_log = logging.getLogger("torch.profiler.kineto")

TRACE_DIR = "profile"
STEP_PREFIX = "ProfilerStep#"
DEVICE_CATEGORIES = ("kernel", "gpu_memcpy", "gpu_memset")  # time on the device
# Matrix multiplications and convolutions, by kernel or operator name (cuBLAS, CUTLASS, cuDNN, oneDNN)
MATMUL = re.compile(r"gemm|conv|matmul|linear|(^|::|_)(add)?b?mm(_|$)|xmma|cutlass|cublas|fprop|dgrad|wgrad|sdpa|"
                    r"attention", re.IGNORECASE)


def is_matmul(name: str) -> bool:
    return bool(MATMUL.search(name))


class ProfileCallback(L.Callback):
    """Runs torch.profiler over training steps and writes one trace per profile; training stops after the
    last one (whatever trainer.max_steps says)."""

    def __init__(self, directory: Path, batch_size: int, skip_steps: int, warmup: int, active: int, repeat: int,
                 verbose: bool = False):
        self.directory = Path(directory)
        self.verbose = verbose
        self.batch_size = batch_size
        self.skip_steps, self.warmup, self.active, self.repeat = skip_steps, warmup, active, repeat
        self.traces: list[Path] = []
        self._profiler: profile | None = None
        self.step_samples: list[int] = []  # each training step's samples, counted from its batch

    def on_train_start(self, trainer, pl_module):
        activities = [ProfilerActivity.CPU]
        if trainer.strategy.root_device.type == "cuda":
            activities.append(ProfilerActivity.CUDA)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._profiler = profile(activities=activities, on_trace_ready=self._save,
                                 schedule=schedule(skip_first=self.skip_steps, wait=0, warmup=self.warmup,
                                                   active=self.active, repeat=self.repeat))
        with self._native_output():
            self._profiler.__enter__()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.step_samples.append(samples_in(pl_module, batch))
        if self._profiler is not None:
            with self._native_output():  # a profile starts or ends here
                self._profiler.step()
            if len(self.traces) == self.repeat:  # the last profile is saved: nothing left to train for
                trainer.should_stop = True

    def on_train_end(self, trainer, pl_module):
        self._stop()

    def on_exception(self, trainer, pl_module, exception):
        self._stop()

    def _stop(self) -> None:
        if self._profiler is not None:
            profiler, self._profiler = self._profiler, None
            with self._native_output():
                profiler.__exit__(None, None, None)

    @contextmanager
    def _native_output(self):
        """The profiler's library (Kineto) writes a line to the process's stderr as each profile starts
        and stops: into the job's log instead, unless verbose=true."""
        if self.verbose:
            yield
            return
        sys.stderr.flush()
        saved = os.dup(2)
        with tempfile.TemporaryFile() as captured:
            os.dup2(captured.fileno(), 2)
            try:
                yield
            finally:
                os.dup2(saved, 2)
                os.close(saved)
                captured.seek(0)
                text = captured.read().decode(errors="replace").strip()
                if text:
                    kineto_log.info("%s", text)

    def _save(self, profiler: profile) -> None:
        path = self.directory / f"bs{self.batch_size}_p{len(self.traces)}.pt.trace.json"
        try:
            profiler.export_chrome_trace(str(path))
        except Exception as exc:
            # Kineto writes <path>.tmp and renames it; on a full disk the rename fails, as a FileNotFoundError
            for leftover in (path, path.with_name(path.name + ".tmp")):
                leftover.unlink(missing_ok=True)
            if shutil.disk_usage(self.directory).free < FULL_BELOW:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path)) from exc
            raise
        self.traces.append(path)

    def metrics(self, run_dir: Path, top: int) -> dict:
        """The result's profile fields, read from the traces written."""
        if len(self.traces) < self.repeat:
            raise RuntimeError(f"the profiler wrote {len(self.traces)} of profile.repeat={self.repeat} traces; "
                               "trainer.max_steps ended training before the last profile")
        profiles = [read_trace(path) for path in self.traces]
        return summarize(profiles, self.traced_samples(), top) | {
            "profile_traces": [_under(path, run_dir) for path in self.traces],
        }


    def traced_samples(self) -> list[int]:
        """The samples of each profile's traced (active) steps, as their batches held them."""
        cycle = self.warmup + self.active
        starts = [self.skip_steps + k * cycle + self.warmup for k in range(len(self.traces))]
        return [sum(self.step_samples[start:start + self.active]) for start in starts]


def _under(path: Path, directory: Path) -> str:
    """The trace's path relative to the Trainer's directory, where it was written: the result travels
    with its folder."""
    return str(path.resolve().relative_to(Path(directory).resolve()))


def self_times(events: list[dict]) -> dict[str, float]:
    """Each name's self time (µs) among nested complete events of one thread: an event's duration
    less the durations of the events directly inside it."""
    totals: dict[str, float] = defaultdict(float)
    stack: list[tuple[float, dict]] = []  # (end, event) of the open events
    for event in sorted(events, key=lambda e: (e["ts"], -e["dur"])):
        while stack and event["ts"] >= stack[-1][0]:
            stack.pop()
        if stack:
            totals[stack[-1][1]["name"]] -= event["dur"]
        totals[event["name"]] += event["dur"]
        stack.append((event["ts"] + event["dur"], event))
    return totals


def read_trace(path: Path) -> dict:
    """One profile from its trace file: the traced steps and their wall-clock (µs), and each kernel's
    (GPU) or `aten::` operator's (CPU) time (µs) and number of calls."""
    events = [e for e in json.loads(Path(path).read_text())["traceEvents"]
              if e.get("ph") == "X" and isinstance(e.get("dur"), (int, float))]
    # the steps as the host ran them (a GPU trace repeats each on the device's timeline, gpu_user_annotation)
    steps = [e for e in events if e.get("cat") == "user_annotation" and str(e.get("name", "")).startswith(STEP_PREFIX)]
    device = [e for e in events if e.get("cat") in DEVICE_CATEGORIES]
    times: dict[str, float] = defaultdict(float)
    calls: dict[str, int] = defaultdict(int)
    if device:
        for e in device:
            times[e["name"]] += e["dur"]
            calls[e["name"]] += 1
    else:
        by_thread: dict = defaultdict(list)
        for e in events:
            if e.get("cat") in ("cpu_op", "user_annotation"):
                by_thread[(e.get("pid"), e.get("tid"))].append(e)
        for thread in by_thread.values():
            for name, us in self_times(thread).items():
                if name.startswith("aten::"):
                    times[name] += us
        for e in events:
            if e.get("cat") == "cpu_op" and e["name"] in times:
                calls[e["name"]] += 1
    return {"kind": "kernel" if device else "operator", "steps": len(steps),
            "step_us": sum(e["dur"] for e in steps), "times_us": dict(times), "calls": dict(calls)}


def summarize(profiles: list[dict], samples: list[int], top: int) -> dict:
    """The result's fields from a job's profiles: every kernel or operator with its time per sample in
    each profile (0 where a profile did not run it), its calls per step and its share of the step,
    largest first; and the step's time per sample, and the share of matrix multiplications and
    convolutions, per profile. `samples`: each profile's traced samples."""
    names = {name for p in profiles for name in p["times_us"]}
    ops = []
    for name in names:
        per_sample = [p["times_us"].get(name, 0.0) / n for p, n in zip(profiles, samples)]
        shares = [p["times_us"].get(name, 0.0) / p["step_us"] for p in profiles]
        ops.append({"name": name, "matmul": is_matmul(name), "us_per_sample": per_sample,
                    "share": sum(shares) / len(shares),
                    "calls_per_step": sum(p["calls"].get(name, 0) for p in profiles) / sum(p["steps"] for p in profiles)})
    ops.sort(key=lambda op: -sum(op["us_per_sample"]))
    matmul = [sum(p["times_us"][n] for n in p["times_us"] if is_matmul(n)) / p["step_us"] for p in profiles]
    return {
        "profile_kind": profiles[0]["kind"],
        "profile_count": len(profiles),
        "profile_steps": profiles[0]["steps"],
        "profile_step_us_per_sample": [p["step_us"] / n for p, n in zip(profiles, samples)],
        "profile_matmul_share": sum(matmul) / len(matmul),
        "profile_top": [{"name": op["name"], "us_per_sample": sum(op["us_per_sample"]) / len(profiles),
                         "share": op["share"], "calls_per_step": op["calls_per_step"]} for op in ops[:top]],
        "profile_ops": ops,
    }
