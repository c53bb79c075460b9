"""GPU telemetry during training, through NVML (nvidia-ml-py, optional: pip install "bsbench[nvml]"):
temperature, SM clock and power, sampled in a background thread, so a report can show whether a card
throttled during a sweep, and the other processes on the card (the noise sentinel, bsbench.job.noise).
Without NVML or a CUDA device the fields are null and the run goes on."""

import logging
import os
import threading

import lightning as L

log = logging.getLogger("bsbench")
FIELDS = ("gpu_temp_c", "sm_clock_mhz", "power_w")


def nvml_module():
    try:
        import pynvml

        pynvml.nvmlInit()
        return pynvml
    except Exception:  # not installed, no driver, no permission: telemetry is optional
        return None


class NvmlSampler:
    """Samples one GPU every `interval_s` seconds between start() and stop()."""

    def __init__(self, nvml, handle, interval_s: float):
        self.nvml, self.handle, self.interval_s = nvml, handle, interval_s
        self.samples: dict[str, list[float]] = {name: [] for name in FIELDS}
        self.others: list[int] = []  # other processes on the card, per sample
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="bsbench-nvml", daemon=True)

    def read(self) -> None:
        nvml, handle = self.nvml, self.handle
        self.samples["gpu_temp_c"].append(nvml.nvmlDeviceGetTemperature(handle, nvml.NVML_TEMPERATURE_GPU))
        self.samples["sm_clock_mhz"].append(nvml.nvmlDeviceGetClockInfo(handle, nvml.NVML_CLOCK_SM))
        self.samples["power_w"].append(nvml.nvmlDeviceGetPowerUsage(handle) / 1000.0)  # milliwatts
        try:
            self.others.append(other_processes(nvml, handle))
        except Exception:  # a driver that does not list processes: the count stays unknown
            pass

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.read()
            except Exception as exc:  # a sensor the card lacks: stop sampling, keep the run
                log.warning("NVML telemetry stopped: %s", exc)
                return
            self._stop.wait(self.interval_s)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5 * self.interval_s + 1)


def other_processes(nvml, handle) -> int:
    """Processes other than this one with a context on the card. In a container, NVML names processes
    by the host's pids, so none is this one's: then one of them is taken to be this process."""
    pids = {p.pid for get in (nvml.nvmlDeviceGetComputeRunningProcesses, nvml.nvmlDeviceGetGraphicsRunningProcesses)
            for p in get(handle)}
    return len(pids - {os.getpid()}) if os.getpid() in pids else max(0, len(pids) - 1)


def nvml_handle(nvml, device):
    """NVML numbers GPUs apart from CUDA (CUDA_VISIBLE_DEVICES renumbers them): match by UUID."""
    import torch

    uuid = getattr(torch.cuda.get_device_properties(device), "uuid", None)
    if uuid is not None:
        try:
            return nvml.nvmlDeviceGetHandleByUUID(f"GPU-{uuid}")
        except Exception:
            pass
    return nvml.nvmlDeviceGetHandleByIndex(device.index or 0)


def summarize(samples: dict[str, list[float]] | None, others: list[int] | None = None) -> dict:
    """min, mean and max of every field; null where nothing was sampled. `others`: the other processes on
    the card at each sample, of which the most is kept."""
    out = {"gpu_other_processes": max(others) if others else None}
    for name in FIELDS:
        values = (samples or {}).get(name) or []
        out[f"{name}_min"] = min(values) if values else None
        out[f"{name}_mean"] = sum(values) / len(values) if values else None
        out[f"{name}_max"] = max(values) if values else None
    out["telemetry_samples"] = len((samples or {}).get(FIELDS[0]) or [])
    return out


class TelemetryCallback(L.Callback):
    """Samples this rank's GPU from the start of fit (mode=inference: predict) to its end."""

    def __init__(self, interval_s: float = 1.0, required: bool = False):
        self.interval_s = interval_s
        self.required = required
        self.sampler: NvmlSampler | None = None

    def on_fit_start(self, trainer, pl_module):
        device = trainer.strategy.root_device
        nvml = nvml_module() if device.type == "cuda" else None
        if nvml is None and self.required:
            why = "NVML could not be initialised" if device.type == "cuda" else f"NVML reads NVIDIA GPUs, not {device.type}"
            raise RuntimeError(f"telemetry.required=true but {why}; use telemetry.required=false for null telemetry.")
        if nvml is not None:
            self.sampler = NvmlSampler(nvml, nvml_handle(nvml, device), self.interval_s)
            self.sampler.start()

    def on_fit_end(self, trainer, pl_module):
        if self.sampler is not None:
            self.sampler.stop()

    on_predict_start = on_fit_start
    on_predict_end = on_fit_end

    def on_exception(self, trainer, pl_module, exception):
        self.on_fit_end(trainer, pl_module)

    def metrics(self) -> dict:
        return summarize(self.sampler.samples, self.sampler.others) if self.sampler else summarize(None)
