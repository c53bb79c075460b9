"""Which exceptions mean "out of memory": a finding about a configuration (the batch did not fit),
not a failure of the run. Lightning's `is_oom_error` knows CUDA's OutOfMemoryError message, one cuDNN
message and the CPU allocator's; near the memory edge CUDA libraries say it in other words too, and
a sweep or `mode=find_max` must not take those for failures. Stdlib only (by type name and message)."""

OOM_TYPES = ("OutOfMemoryError", "MemoryError")
OOM_MESSAGES = (
    "out of memory",  # CUDA's allocator, CUDA kernels (cudaErrorMemoryAllocation), NCCL
    "can't allocate memory",  # the CPU allocator
    "CUBLAS_STATUS_ALLOC_FAILED",  # cuBLAS could not get its workspace
    "CUDNN_STATUS_ALLOC_FAILED",
    "CUDNN_STATUS_NOT_SUPPORTED",  # cuDNN's answer when no algorithm fits the memory left (Lightning's "snafu")
    "unable to find an engine to execute this computation",  # cuDNN v8/v9 when no engine's workspace fits
)


def is_oom(exc: BaseException | None) -> bool:
    """True when the exception, or one it was raised from, says memory ran out."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if any(cls.__name__ in OOM_TYPES for cls in type(exc).__mro__):
            return True
        if isinstance(exc, RuntimeError):
            message = str(exc)
            if any(marker.lower() in message.lower() for marker in OOM_MESSAGES):
                return True
        exc = exc.__cause__
    return False
