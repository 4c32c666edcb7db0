"""Compiled engine backend on Apache TVM (the compiler MLC-LLM is built on). Needs the `tvm` extra.

- `quant`, `kernels`: GGUF 4-bit weights kept packed and dequantized inside the matmul, with CPU
  and GPU schedules.
- `target`: llvm for this CPU, cuda, vulkan, OpenCL for Mali cross-compiled for an aarch64 host.
- `model`: the Llama graph on TVM's paged KV cache with run-time LoRA slots, and the artifact cache.
- `runtime.TvmLlama`: one sequence on the compiled model; `speculative`: a CPU draft for it.
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
