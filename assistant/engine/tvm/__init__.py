"""Compiled engine backend on Apache TVM (the compiler MLC-LLM is built on). Needs the `tvm` extra.

- `quant`, `kernels`: GGUF 4-bit weights kept packed and dequantized inside the matmul, with CPU
  and GPU schedules.
- `target`: llvm for this CPU, cuda, vulkan, OpenCL for Mali cross-compiled for an aarch64 host.
- `weights`: the GGUF read into the packed arrays the graph takes (base weights, a LoRA slot).
- `graph`: the Llama graph on TVM's paged KV cache with run-time LoRA slots (layers as modules).
- `compile`: the graph compiled per target, and the artifact cache.
- `runtime.TvmLlama`: sequences of the paged KV cache on the compiled model.
- `engine.TvmEngine`: the `Engine` protocol on it (llama.cpp's tokenizer, vocab-only).
- A CPU draft: `assistant.engine.speculative.SpeculativeEngine` with a `TvmEngine` target.
"""

import os

# TVM pins its pool threads, and the calling thread, to cores by default; llama.cpp threads
# created later (ASR, a CPU draft) then inherit one core and spin against each other (decode
# fell from 80 to 0.3 tok/s here). The OS scheduler places them better.
os.environ.setdefault("TVM_BIND_THREADS", "0")
# Without TVM_NUM_THREADS, TVM caps its pool at half the logical CPUs on x86 (it assumes
# hyper-threading), and `config_threadpool` cannot go above the cap: on this 2-vCPU box every
# kernel ran on one thread. With the cap at all CPUs, `TvmEngine.set_threads` picks the count:
# decode 31 -> 55 tok/s, prefill 90 -> 135 tok/s here.
os.environ.setdefault("TVM_NUM_THREADS", str(os.cpu_count() or 1))

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
