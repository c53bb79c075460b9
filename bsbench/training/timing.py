"""Wall-clock timing of a run, read only after the device has finished its queued work."""

import statistics
import time

import lightning as L
import torch

from bsbench.core import interrupt
from bsbench.training.energy import EnergyMeter, energy_fields
from bsbench.training.parts import on_meta, samples_in


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued kernels: CUDA and MPS return before the work is done."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


# ddp_spawn runs fit and test in child processes, and only trainer.callback_metrics travels back to
# the main process: the measurements travel there, under this key, as plain numbers.
STATE_KEY = "bsbench_timing"
STEP_TIMES_KEY = "bsbench_step_times"
STATE = ("train_time_s", "epoch_times_s", "first_step_time_s", "inference_time_s", "test_samples", "steps_seen",
         "samples_seen", "timed_steps", "timed_samples", "timed_seconds", "peak_memory_bytes", "batch_latencies_s",
         "batch_samples", "timed_energy_mj", "energy_reason", "optimizer_steps", "device_batches", "weights_moved",
         "first_batch_samples")


class TimingCallback(L.Callback):
    """Records train time (fit, validation included), per-epoch times, steady-state training
    throughput, inference time on the test set and peak device memory.

    Steady state: the first `warmup_steps` training steps are left out, and so is everything between
    training steps (validation, the dataloader's restart at each epoch), so samples/s measures the
    training step itself. The clock is read with the device synchronized only where an interval opens
    or closes (fit, each epoch, the steady-state stretches, the first step, inference), never once per
    step, so timing does not slow down what it times.
    """

    def __init__(self, warmup_steps: int = 20):
        self.warmup_steps = warmup_steps
        self.train_time_s: float | None = None
        self.epoch_times_s: list[float] = []
        self.first_step_time_s: float | None = None
        self.inference_time_s: float | None = None
        self.test_samples = 0
        self.steps_seen = 0
        self.samples_seen = 0
        self.timed_steps = 0
        self.timed_samples = 0
        self.timed_seconds = 0.0
        self.peak_memory_bytes: int | None = None
        self._interval_start: float | None = None
        self.batch_latencies_s: list[float] = []  # mode=inference: each timed forward pass
        self.batch_samples = 0
        # NVML's energy counter over the same timed intervals (bsbench.training.energy), all ranks' GPUs
        self.timed_energy_mj: float | None = 0.0
        self.energy_reason: str | None = None
        self._meter: EnergyMeter | None = None
        self._energy_start: float | None = None
        self.first_batch = None  # the first training batch's shapes, on the meta device (the FLOP count)
        self.first_batch_samples: int | None = None  # one device's samples in it (mode=find_max's trials)
        self.optimizer_steps = 0  # in the timed steps, with a gradient to step on (a step that trains)
        self.device_batches: dict[int, int] = {}  # one device's batch sizes in the timed steps: how often each
        # whether a trained weight changed over the timed steps: a step of an optimizer that Lightning does not
        # wrap (manual optimization with use_pl_optimizer=False) calls no hook, and still trains
        self.weights_moved: bool | None = None
        self._probe = None

    def _now(self, trainer: L.Trainer) -> float:
        # With several ranks, every clock read waits for all of them: rank 0's interval then covers
        # the slowest rank, and that is the clock the result reports.
        synchronize(trainer.strategy.root_device)
        if trainer.world_size > 1:
            trainer.strategy.barrier("bsbench-timing")
        return time.perf_counter()

    # --- fit ---
    def on_fit_start(self, trainer, pl_module):
        self._fit_start = self._start_memory_and_clock(trainer)

    def on_fit_end(self, trainer, pl_module):
        self.train_time_s = self._end_memory_and_clock(trainer) - self._fit_start
        self._publish(trainer)

    def _start_memory_and_clock(self, trainer) -> float:
        """fit's or predict's start: CUDA's peak memory counter reset, the energy counter found, and
        the clock read."""
        device = trainer.strategy.root_device
        if self._meter is None:
            self._meter = EnergyMeter(device)
            self.energy_reason = self._meter.reason
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        return self._now(trainer)

    def _end_memory_and_clock(self, trainer) -> float:
        """fit's or predict's end: the clock read, the peak memory kept, every rank's energy summed."""
        now = self._now(trainer)
        device = trainer.strategy.root_device
        if device.type == "cuda":
            self.peak_memory_bytes = torch.cuda.max_memory_allocated(device)
            if trainer.world_size > 1:  # every rank's GPU: a rank whose counter failed makes the sum unknown
                mine = torch.tensor(float("nan") if self.timed_energy_mj is None else self.timed_energy_mj,
                                    device=device, dtype=torch.float64)
                total = float(trainer.strategy.reduce(mine, reduce_op="sum"))
                self.timed_energy_mj = None if total != total else total
                if self.timed_energy_mj is None and self.energy_reason is None:
                    self.energy_reason = "another rank's energy counter failed"
        return now

    def _energy_open(self) -> None:
        self._energy_start = self._meter.read() if self._meter is not None else None

    def _energy_close(self) -> None:
        """The energy of the interval that just closed, added; a failed read leaves no total."""
        end = self._meter.read() if self._meter is not None else None
        if end is None or self._energy_start is None or self.timed_energy_mj is None:
            self.timed_energy_mj = None
            if self._meter is not None:
                self.energy_reason = self.energy_reason or self._meter.reason
        else:
            self.timed_energy_mj += end - self._energy_start
        self._energy_start = None

    def on_train_epoch_start(self, trainer, pl_module):
        self._epoch_start = self._now(trainer)

    def on_train_epoch_end(self, trainer, pl_module):
        # Lightning calls this after the epoch's validation, so epoch times include it.
        self._close_interval(trainer)
        self.epoch_times_s.append(self._now(trainer) - self._epoch_start)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        interrupt.check()  # a stop whose first delivery was swallowed (see bsbench.core.interrupt)
        if self.steps_seen == 0:  # the first step: compilation, autotuning, allocation
            self._first_step_start = self._now(trainer)
        if self._interval_start is None and self.steps_seen >= self.warmup_steps:
            self._interval_start = self._now(trainer)
            self._energy_open()
            if self._probe is None:
                self._probe = next((p for p in pl_module.parameters() if p.requires_grad), None)
                self._probe_start = self._probe.detach().clone() if self._probe is not None else None

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        # Lightning steps the optimizer even where training_step returned None (no backward ran): only a
        # step with a gradient trains
        if self._interval_start is not None and any(p.grad is not None for group in optimizer.param_groups
                                                    for p in group["params"]):
            self.optimizer_steps += 1

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        device_samples = samples_in(pl_module, batch)
        samples = device_samples * trainer.world_size
        if self.steps_seen == 0:
            self.first_step_time_s = self._now(trainer) - self._first_step_start
            self.first_batch = on_meta(batch)
            self.first_batch_samples = device_samples
        self.steps_seen += 1
        self.samples_seen += samples
        if self._interval_start is not None:
            self.timed_steps += 1
            self.timed_samples += samples
            # an epoch's last batch may be short (a loader that keeps it): not the batch size the run trains on,
            # however often short epochs make it (a batch of 80 from 154 samples: every other batch is 74)
            last = batch_idx + 1 == trainer.num_training_batches
            if not (last and self.device_batches and device_samples < max(self.device_batches)):
                self.device_batches[device_samples] = self.device_batches.get(device_samples, 0) + 1

    def on_validation_start(self, trainer, pl_module):
        self._close_interval(trainer)

    def on_train_end(self, trainer, pl_module):
        self._close_interval(trainer)
        if self._probe is not None and self._probe_start is not None:
            self.weights_moved = not torch.equal(self._probe.detach(), self._probe_start)
            self._probe = self._probe_start = None

    def _close_interval(self, trainer) -> None:
        if self._interval_start is not None:
            self.timed_seconds += self._now(trainer) - self._interval_start
            self._energy_close()
            self._interval_start = None

    # --- inference ---
    def on_test_start(self, trainer, pl_module):
        self.test_samples = 0
        self._test_start = self._now(trainer)

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        self.test_samples += samples_in(pl_module, batch) * trainer.world_size

    def on_test_end(self, trainer, pl_module):
        self.inference_time_s = self._now(trainer) - self._test_start
        self._publish(trainer)

    # --- mode=inference: forward passes alone, each timed between two synchronized clock reads ---
    def on_predict_start(self, trainer, pl_module):
        self.batch_latencies_s, self.batch_samples = [], 0
        self._test_start = self._start_memory_and_clock(trainer)

    def on_predict_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        interrupt.check()
        self._batch_start = self._now(trainer)
        if batch_idx >= self.warmup_steps:
            self._energy_open()

    def on_predict_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        latency = self._now(trainer) - self._batch_start
        if self.first_batch is None:
            self.first_batch = on_meta(batch)
        if batch_idx >= self.warmup_steps:
            self._energy_close()
            self.batch_latencies_s.append(latency)
            self.batch_samples += samples_in(pl_module, batch)

    def on_predict_end(self, trainer, pl_module):
        self.inference_time_s = self._end_memory_and_clock(trainer) - self._test_start
        self._publish(trainer)

    def on_exception(self, trainer, pl_module, exception):
        # Lightning calls this before tearing the strategy down. With several ranks, the teardown of
        # the failing rank breaks the others' collectives: this mark tells the cause from the echoes.
        if not hasattr(exception, "failed_at"):
            exception.failed_at = time.time()

    def _publish(self, trainer) -> None:
        trainer.callback_metrics[STATE_KEY] = {name: getattr(self, name) for name in STATE}

    def collect(self, trainer) -> None:
        """Take over what a child process measured (ddp_spawn); a no-op when this process measured it."""
        for name, value in trainer.callback_metrics.get(STATE_KEY, {}).items():
            setattr(self, name, value)

    def metrics(self) -> dict:
        def rate(samples, seconds):
            return samples / seconds if samples and seconds else None

        return {
            "train_time_s": self.train_time_s,
            "epoch_times_s": self.epoch_times_s,
            "first_step_time_s": self.first_step_time_s,
            "train_samples": self.samples_seen,
            "train_samples_per_s": rate(self.timed_samples, self.timed_seconds),
            "warmup_steps": self.warmup_steps,
            "timed_steps": self.timed_steps,
            "timed_samples": self.timed_samples,
            "timed_seconds": self.timed_seconds,
            "optimizer_steps": self.optimizer_steps if self.timed_steps else None,
            "weights_moved": self.weights_moved,
            "batch_size_observed": observed(self.device_batches),
            "inference_time_s": self.inference_time_s,
            "inference_samples_per_s": rate(self.test_samples, self.inference_time_s),
            "test_samples": self.test_samples if self.inference_time_s is not None else None,
            "peak_memory_mib": self.peak_memory_bytes / 2**20 if self.peak_memory_bytes is not None else None,
            **energy_fields(self.timed_energy_mj if self.timed_steps else None, self.timed_samples, self.energy_reason),
        }

    def inference_metrics(self) -> dict:
        """mode=inference's figures: samples/s over the timed forward passes, their latency."""
        ms = sorted(t * 1000 for t in self.batch_latencies_s)
        seconds = sum(self.batch_latencies_s)
        return {
            "inference_time_s": self.inference_time_s,
            "inference_samples_per_s": self.batch_samples / seconds if self.batch_samples and seconds else None,
            "inference_batches": len(ms),
            "warmup_steps": self.warmup_steps,
            "latency_median_ms": statistics.median(ms) if ms else None,
            "latency_p95_ms": percentile(ms, 95) if ms else None,
            "peak_memory_mib": self.peak_memory_bytes / 2**20 if self.peak_memory_bytes is not None else None,
            **energy_fields(self.timed_energy_mj if ms else None, self.batch_samples, self.energy_reason),
        }


def observed(batches: dict) -> int | None:
    """The batch size one device trained on: the most common in the timed steps (a short last batch of an
    epoch is not it), the larger where two are as common."""
    if not batches:
        return None
    return max(batches, key=lambda size: (batches[size], size))


def percentile(ordered: list[float], q: float) -> float:
    """The q-th percentile of sorted values, interpolated between the two nearest ranks (numpy's default)."""
    position = (len(ordered) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


class StepTimer(L.Callback):
    """Per-step times of the steady state: a mark at the start of every training step after the
    warm-up, and one where a stretch of consecutive steps ends (validation, the end of an epoch or of
    training), so no interval holds anything but training steps. On CUDA the marks are events on the
    device's stream, so no step waits for a clock read; on the CPU they are clock reads, which wait
    for nothing. Other devices (MPS) would need a sync per mark: no per-step times there."""

    def __init__(self, warmup_steps: int):
        self.warmup_steps = warmup_steps
        self.steps_seen = 0
        self.stretches: list[list] = []
        self._open: list | None = None
        self.step_times_s: list[float] = []
        self._ended = None  # the mark where the last timed step ended
        self._waits: list[tuple] = []  # (a step's end, the next step's start): the wait for the next batch
        self.data_waits_s: list[float] = []

    @staticmethod
    def _mark(device: torch.device):
        if device.type == "cuda":
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            return event
        return time.perf_counter()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        device = trainer.strategy.root_device
        if self.steps_seen >= self.warmup_steps and device.type in ("cuda", "cpu"):
            if self._open is None:
                self._open = []
                self.stretches.append(self._open)
            mark = self._mark(device)
            self._open.append(mark)
            if self._ended is not None:
                self._waits.append((self._ended, mark))
        self.steps_seen += 1

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        # the next batch is fetched and moved to the device between this mark and the next step's start: on
        # CUDA, events on the stream, so the gap is the time the device had nothing to do while it waited
        if self._open is not None:
            self._ended = self._mark(trainer.strategy.root_device)

    def _close(self, trainer) -> None:
        if self._open is not None:
            self._open.append(self._mark(trainer.strategy.root_device))
            self._open = None
        self._ended = None

    def on_validation_start(self, trainer, pl_module):
        self._close(trainer)

    def on_train_epoch_end(self, trainer, pl_module):
        self._close(trainer)

    def on_train_end(self, trainer, pl_module):
        self._close(trainer)
        if trainer.strategy.root_device.type == "cuda" and self.stretches:
            torch.cuda.synchronize(trainer.strategy.root_device)
        self.step_times_s = [_seconds(a, b) for marks in self.stretches for a, b in zip(marks, marks[1:])]
        self.data_waits_s = [max(0.0, _seconds(a, b)) for a, b in self._waits]
        # for ddp_spawn, as TimingCallback
        trainer.callback_metrics[STEP_TIMES_KEY] = {"steps": self.step_times_s, "waits": self.data_waits_s}

    def metrics(self, trainer) -> dict:
        found = trainer.callback_metrics.get(STEP_TIMES_KEY, {"steps": self.step_times_s, "waits": self.data_waits_s})
        return step_time_metrics(found["steps"], found["waits"])


def _seconds(a, b) -> float:
    return b - a if isinstance(a, float) else a.elapsed_time(b) / 1000


# the share of the steps' time spent waiting for the next batch from which a run is input-bound: the gap
# also holds Lightning's own work between steps (a few milliseconds a step on the development CPU, a tenth
# of a step of a tiny model), which a fifth stays clear of
INPUT_BOUND = 0.2


def compile_time(compiled: bool, first_step_s: float | None, median_step_ms: float | None) -> float | None:
    """What compiling took, where the run compiled: its first step beyond a steady-state step (torch.compile
    compiles the forward and backward passes in the first step). None for a run that did not compile."""
    if not compiled or first_step_s is None or median_step_ms is None:
        return None
    return max(0.0, first_step_s - median_step_ms / 1000)


def step_time_metrics(seconds: list[float], waits: list[float] | None = None) -> dict:
    """The step-time fields of a result, from the steps' durations in seconds, and the time each waited for
    its batch (`waits`: from the end of the step before to its own start, which the steps' durations hold)."""
    ms = [t * 1000 for t in seconds]
    waited = sum(waits) if waits is not None and seconds else None
    share = waited / sum(seconds) if waited is not None and sum(seconds) > 0 else None
    return {
        "step_time_mean_ms": statistics.fmean(ms) if ms else None,
        "step_time_median_ms": statistics.median(ms) if ms else None,
        "step_time_sd_ms": statistics.stdev(ms) if len(ms) > 1 else None,
        "data_wait_s": waited,
        "data_wait_fraction": share,
        "input_bound": share >= INPUT_BOUND if share is not None else None,
    }
