"""What a result was measured on: library versions and the device, so runs can be compared."""

import os
import platform
import socket

import lightning
import torch


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def describe(device: torch.device) -> dict:
    env = {
        "device_type": device.type,
        "device_name": cpu_name() if device.type == "cpu" else device.type,
        "sm_count": None,
        "device_memory_gib": None,
        "torch_version": torch.__version__,
        "lightning_version": lightning.__version__,
        "cuda_version": torch.version.cuda,
        "cudnn_version": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "python_version": platform.python_version(),
        "host": socket.gethostname(),
        "cpu_count": os.cpu_count(),
        # per process: a DDP job on the CPU shares one process's threads among its ranks (bsbench.job.ranks)
        "torch_num_threads": torch.get_num_threads(),
        "torch_num_interop_threads": torch.get_num_interop_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        # process-wide numerics that change speed: matmul_precision sets the first (matrix
        # multiplications only); convolutions follow the second, which bsbench leaves as torch has it
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
        "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env.update(
            device_name=props.name,
            sm_count=props.multi_processor_count,
            device_memory_gib=round(props.total_memory / 2**30, 2),
        )
    return env
