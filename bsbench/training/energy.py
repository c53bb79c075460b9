"""Energy per image, from NVML's total-energy counter (nvmlDeviceGetTotalEnergyConsumption: millijoules
since the driver loaded, the whole board, Volta and newer, updated every few tens of milliseconds),
read where bsbench.training.timing opens and closes its timed intervals, so the joules belong to the
same steps as the samples/s. Short intervals carry the counter's update period as error: a timed
stretch of a second is good to a few percent, which paired rounds average out. Without NVML, on a
device that is not an NVIDIA GPU, or on a GPU whose counter is unsupported, the fields are null and
`energy_reason` says why."""

import torch

from bsbench.training.telemetry import nvml_handle, nvml_module


def unavailable(accelerator: str = "auto", device: torch.device | None = None) -> str | None:
    """Why this process cannot read a GPU's energy counter, or None where it can."""
    if device is not None and device.type != "cuda":
        return f"NVML's energy counter reads NVIDIA GPUs, not {device.type}"
    if device is None and (accelerator == "cpu" or not torch.cuda.is_available()):
        return "no CUDA GPU here; NVML's energy counter reads NVIDIA GPUs"
    nvml = nvml_module()
    if nvml is None:
        return 'NVML is not available (pip install "bsbench[nvml]", and an NVIDIA driver)'
    try:
        handle = nvml_handle(nvml, device or torch.device("cuda", torch.cuda.current_device()))
        nvml.nvmlDeviceGetTotalEnergyConsumption(handle)
    except Exception as exc:
        return f"this GPU does not report its total energy ({type(exc).__name__}; Volta and newer do)"
    return None


class EnergyMeter:
    """The energy counter of one rank's GPU; `read()` in millijoules, or None with `reason` set."""

    def __init__(self, device: torch.device):
        self.reason = unavailable(device=device)
        self._read = None
        if self.reason is None:
            nvml = nvml_module()
            handle = nvml_handle(nvml, device)
            self._read = lambda: float(nvml.nvmlDeviceGetTotalEnergyConsumption(handle))

    def read(self) -> float | None:
        if self._read is None:
            return None
        try:
            return self._read()
        except Exception as exc:  # the counter stopped answering: no energy for this run, the run goes on
            self.reason, self._read = f"the energy counter failed ({type(exc).__name__})", None
            return None


def energy_fields(energy_mj: float | None, samples: int, reason: str | None) -> dict:
    """The result's energy fields: joules over the timed intervals (every rank's GPU), per image."""
    if energy_mj is None or not samples:
        return {"energy_j": None, "joules_per_sample": None,
                "energy_reason": reason or ("no timed sample" if energy_mj is not None else "not measured")}
    return {"energy_j": energy_mj / 1000, "joules_per_sample": energy_mj / 1000 / samples, "energy_reason": None}
