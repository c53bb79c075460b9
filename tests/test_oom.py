import pytest
import torch

from bsbench.core.oom import is_oom


@pytest.mark.parametrize("exc", [
    torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
    MemoryError(),
    RuntimeError("CUDA error: out of memory\nCUDA kernel errors might be asynchronously reported"),
    RuntimeError("cuDNN error: CUDNN_STATUS_NOT_SUPPORTED. This error may appear if you passed in a non-contiguous input."),
    RuntimeError("FIND was unable to find an engine to execute this computation"),
    RuntimeError("Unable to find an engine to execute this computation"),
    RuntimeError("CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`"),
    RuntimeError("[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: can't allocate memory: you tried to "
                 "allocate 1000000 bytes."),
])
def test_out_of_memory_in_every_wording(exc):
    assert is_oom(exc)


def test_raised_from_an_out_of_memory_error():
    try:
        try:
            raise torch.OutOfMemoryError("CUDA out of memory")
        except torch.OutOfMemoryError as inner:
            raise RuntimeError("backend compiler failed") from inner
    except RuntimeError as outer:
        assert is_oom(outer)


@pytest.mark.parametrize("exc", [ValueError("out of memory"), RuntimeError("CUDA error: an illegal memory access"),
                                 RuntimeError("Input type (torch.FloatTensor) and weight type should be the same")])
def test_other_failures_are_failures(exc):
    assert not is_oom(exc)
