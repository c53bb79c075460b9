"""How close to the hardware a run came: achieved TFLOP/s from its FLOPs per image and its measured
images per second, and model FLOPs utilization (MFU), the achieved rate over the devices' dense peak
for the arithmetic that ran. Stdlib only.

The peaks are bsbench's own table of dense figures (no structured sparsity) from NVIDIA's datasheets.
Where a datasheet gives only with-sparsity figures for the tensor cores (marked * there), the dense
figure is half of it. Lightning's table is not used: it has no H200 and mixes with-sparsity figures
(H100 NVL, H200) with dense ones."""

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Peak:
    pattern: str  # searched for in torch.cuda.get_device_name(), case-insensitive, as a whole word
    tflops: dict  # dense TFLOP/s of one device per arithmetic
    source: str


_H100_SXM = {"fp64": 67, "fp32": 67, "tf32": 494.5, "bf16": 989.5, "fp16": 989.5}
_NVL = {"fp64": 60, "fp32": 60, "tf32": 417.5, "bf16": 835.5, "fp16": 835.5}
_A100 = {"fp64": 19.5, "fp32": 19.5, "tf32": 156, "bf16": 312, "fp16": 312}

# First match wins: the more specific names first (H200 NVL before H200). fp64 is the FP64 tensor
# core figure where the card has one.
PEAKS = (
    Peak("GH200", _H100_SXM, "NVIDIA GH200 Grace Hopper Superchip datasheet"),
    Peak("H200 NVL", _NVL, "NVIDIA H200 datasheet (H200 NVL column)"),
    Peak("H200", _H100_SXM, "NVIDIA H200 datasheet (H200 SXM column)"),
    Peak("H100 NVL", _NVL, "NVIDIA H100 datasheet (H100 NVL column)"),
    Peak("H100 PCIe", {"fp64": 51, "fp32": 51, "tf32": 378, "bf16": 756.5, "fp16": 756.5},
         "NVIDIA H100 datasheet (H100 PCIe column)"),
    Peak("H100", _H100_SXM, "NVIDIA H100 datasheet (H100 SXM column)"),
    Peak("A100", _A100, "NVIDIA A100 datasheet (SXM and PCIe alike)"),
    Peak("A10", {"fp32": 31.2, "tf32": 62.5, "bf16": 125, "fp16": 125}, "NVIDIA A10 datasheet"),
    Peak("L40S", {"fp32": 91.6, "tf32": 183, "bf16": 362.05, "fp16": 362.05}, "NVIDIA L40S datasheet"),
    Peak("L40", {"fp32": 90.5, "tf32": 90.5, "bf16": 181.05, "fp16": 181.05}, "NVIDIA L40 datasheet"),
    Peak("L4", {"fp32": 30.3, "tf32": 60, "bf16": 121, "fp16": 121}, "NVIDIA L4 datasheet"),
    Peak("V100S", {"fp64": 8.2, "fp32": 16.4, "fp16": 130}, "NVIDIA V100S datasheet"),
    Peak("V100-SXM2", {"fp64": 7.8, "fp32": 15.7, "fp16": 125}, "NVIDIA V100 datasheet (SXM2 column)"),
    Peak("V100-PCIE", {"fp64": 7, "fp32": 14, "fp16": 112}, "NVIDIA V100 datasheet (PCIe column)"),
    Peak("T4", {"fp32": 8.1, "fp16": 65}, "NVIDIA T4 datasheet"),
)

USER_PEAK = "mfu.peak_tflops"


def arithmetic(result: dict) -> str | None:
    """The arithmetic a result's matrix multiplications and convolutions ran in: under 32-true on a
    GPU, TF32 where torch allows it in either (matmul_precision high or medium, or cuDNN's allow_tf32,
    on by default), which a card without TF32 runs as FP32."""
    precision = str(result.get("precision_used") or "")
    tf32 = result.get("device_type") == "cuda" and (
        result.get("float32_matmul_precision") in ("high", "medium") or bool(result.get("cudnn_allow_tf32")))
    if precision.startswith("bf16"):
        return "bf16"
    if precision.startswith("16"):
        return "fp16"
    if precision.startswith("32"):
        return "tf32" if tf32 else "fp32"
    if precision.startswith("64"):
        return "fp64"
    return None


def peak(device_name: str, kind: str) -> tuple[float, str, str] | None:
    """(dense TFLOP/s of one device, the arithmetic it is for, where the figure comes from), or None."""
    for entry in PEAKS:
        if re.search(rf"(?<![A-Za-z0-9]){re.escape(entry.pattern)}(?![A-Za-z0-9])", device_name, re.IGNORECASE):
            for candidate in (kind, "fp32") if kind == "tf32" else (kind,):  # no TF32 before Ampere
                if candidate in entry.tflops:
                    return entry.tflops[candidate], candidate, f"{entry.source}, dense"
            return None
    return None


def _tflops(flops_per_sample, samples_per_s) -> float | None:
    return flops_per_sample * samples_per_s / 1e12 if flops_per_sample and samples_per_s else None


def utilization(result: dict, user_peak: float | None = None) -> dict:
    """Achieved TFLOP/s (all devices together) and MFU for a result that has its FLOPs per image and
    its rates; `user_peak` (mfu.peak_tflops) replaces the table's peak. Every value that cannot be
    given is null, and `mfu_reason` says why MFU is."""
    train = _tflops(result.get("train_flops_per_sample"), result.get("train_samples_per_s"))
    inference = _tflops(result.get("inference_flops_per_sample"), result.get("inference_samples_per_s"))
    kind = arithmetic(result)
    out = {"train_tflops": train, "inference_tflops": inference, "peak_tflops": None, "peak_source": None,
           "mfu_arithmetic": kind, "mfu": None, "inference_mfu": None, "mfu_reason": None}
    device = f"{result.get('device_type')} device {result.get('device_name')!r}"
    if user_peak is not None:
        out.update(peak_tflops=user_peak, peak_source=f"{USER_PEAK} (set by the user)")
    elif result.get("device_type") != "cuda":
        out["mfu_reason"] = (f"bsbench knows no peak for the {device}; set {USER_PEAK}=<dense TFLOP/s of one device "
                             "at this precision> to get MFU")
        return out
    elif kind is None:
        out["mfu_reason"] = f"no peak for precision {result.get('precision_used')}; set {USER_PEAK} to get MFU"
        return out
    else:
        found = peak(result.get("device_name") or "", kind)
        if found is None:
            out["mfu_reason"] = (f"bsbench's table has no {kind} peak for the {device}; set {USER_PEAK}=<its dense "
                                 f"{kind} TFLOP/s> to get MFU")
            return out
        out.update(peak_tflops=found[0], peak_source=found[2], mfu_arithmetic=found[1])
    world = result.get("world_size") or 1
    if train is not None:
        out["mfu"] = train / (out["peak_tflops"] * world)
    if inference is not None:
        out["inference_mfu"] = inference / (out["peak_tflops"] * (result.get("inference_world_size") or world))
    if out["mfu"] is None:
        out["mfu_reason"] = ("no FLOP count: " + result["flops_error"] if result.get("flops_error")
                             else "no steady-state training rate was measured")
    return out
