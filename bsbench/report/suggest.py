"""`bsbench-report --suggest`: candidate batch sizes for a GPU, to sweep around rather than trust."""

# Streaming multiprocessors of common GPUs, for --suggest without the GPU at hand.
KNOWN_SM = {"V100": 80, "RTX 2080 Ti": 68, "A100": 108, "RTX 3090": 82, "RTX 4090": 128, "L4": 58, "H100 SXM": 132}


def rule_of_thumb(sm_count: int, image_size: int, channels: int, largest: int) -> list[int]:
    """int(n * 2**14 * SM / (H * W * C)) for n = 1, 2, ... up to `largest` (quoted beside the reference)."""
    unit = 2**14 * sm_count / (image_size * image_size * channels)
    return [int(n * unit) for n in range(1, int(largest / unit) + 1) if int(n * unit) > 0]


def gpu_here() -> tuple[int, str] | None:
    """The first CUDA GPU's streaming multiprocessors and name, read from the CUDA driver (libcuda) through
    ctypes: the report imports no torch (it runs where torch is not installed), and the driver is there
    wherever a GPU is. None where there is no driver or no GPU."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("cuda") or "libcuda.so.1"
    try:
        cuda = ctypes.CDLL(name)
    except OSError:
        return None
    device, count, label = ctypes.c_int(), ctypes.c_int(), ctypes.create_string_buffer(256)
    multiprocessor_count = 16  # CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT
    if cuda.cuInit(0) or cuda.cuDeviceGet(ctypes.byref(device), 0) \
            or cuda.cuDeviceGetAttribute(ctypes.byref(count), multiprocessor_count, device) or count.value < 1:
        return None
    cuda.cuDeviceGetName(label, len(label), device)
    return count.value, label.value.decode(errors="replace") or "CUDA GPU 0"


def suggest(sm_count: int | None, image_size: int, channels: int, largest: int, around: int) -> str:
    if sm_count is None:
        found = gpu_here()
        if found is None:
            known = ", ".join(f"{name} {sm}" for name, sm in KNOWN_SM.items())
            raise SystemExit(f"bsbench-report: error: no CUDA GPU here to count its SMs; pass --sm N ({known}).")
        sm_count, device = found
    else:
        device = "the given GPU"
    powers = [2**k for k in range(largest.bit_length()) if 2**k <= largest]
    thumb = rule_of_thumb(sm_count, image_size, channels, largest)
    near = sorted({b for b in [*powers, *thumb, *range(8, largest + 1, 8)] if abs(b - around) <= 32})
    return "\n".join([
        f"Candidate batch sizes for {device} ({sm_count} SMs), {channels}x{image_size}x{image_size} images, up to {largest}:",
        f"  powers of two:   {', '.join(map(str, powers))}",
        f"  multiples of 8:  8, 16, 24, ..., {largest - largest % 8}",
        f"  rule of thumb:   {', '.join(map(str, thumb)) or 'none'}  (int(n * 2**14 * SM / (H*W*C)))",
        f"  near {around}:        {', '.join(map(str, near))}",
        "",
        "Measure instead of guessing. The question needs the training step's speed only (mode=throughput: seconds",
        "per job, synthetic data, no download); the fastest answer, for the batch size and its neighbours:",
        f"  python -m bsbench -m 'batch_size={max(1, around - 1)},{around},{around + 1}' repeats=5 mode=throughput "
        f"data=synthetic data.image_size={image_size}",
        "and the landscape around it:",
        f"  python -m bsbench -m 'batch_size=range({max(1, around - 8)},{around + 9})' repeats=3 mode=throughput "
        f"data=synthetic data.image_size={image_size}",
    ]) + "\n"
