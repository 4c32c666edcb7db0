"""Compiled engine backend on Apache TVM (the compiler MLC-LLM is built on), first slice.

What exists: the 4-bit kernels the compiled model will be built from (GGUF Q4_1 weights kept
packed; dequantized inside the matmul, never as a float copy), their CPU and GPU schedules, and
target resolution for the integrator's devices (llvm for this CPU, cuda, vulkan, OpenCL for Mali
cross-compiled for an aarch64 host). Needs the `tvm` extra.
"""

from assistant.engine.tvm.kernels import q4_1_matmul, schedule_cpu, schedule_gpu
from assistant.engine.tvm.quant import Q4_1Weight, read_q4_1
from assistant.engine.tvm.target import TargetKind, device_available, resolve_target

__all__ = [
    "Q4_1Weight",
    "TargetKind",
    "device_available",
    "q4_1_matmul",
    "read_q4_1",
    "resolve_target",
    "schedule_cpu",
    "schedule_gpu",
]
