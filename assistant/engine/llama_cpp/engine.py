"""The llama.cpp engine: one loaded GGUF model with one context, through the low-level C API.

The high-level `Llama` class fixes one LoRA per instance and disables mmap with
adapters; the low-level API lets us share one model across skills, switch adapters
per request, and drive the KV cache ourselves (prefix slots, speculative rollback).
"""

from __future__ import annotations

import ctypes
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import llama_cpp as ll
import numpy as np

from assistant.engine.llama_cpp.native import (
    LlamaVocab,
    amx_compiled,
    gpu_devices,
    init_backend,
    last_errors,
    recent_errors,
)
from assistant.engine.local import WORK_SEQ, LocalEngine
from assistant.engine.lora import AdapterError, check_base, read_adapter_manifest
from assistant.engine.types import EngineError

log = logging.getLogger("assistant.engine.llama_cpp")


@dataclass
class _Adapter:
    name: str
    path: Path
    scale: float
    handle: Any  # llama_adapter_lora_p


class LlamaCppEngine(LocalEngine):
    """One loaded GGUF model with one context; requests are serialized by a lock."""

    vocab: LlamaVocab
    GPU_VARIANCE = (
        "a GPU computes a verify batch with other kernels than a single token (matrix-matrix vs matrix-vector "
        "shaders, other summation orders), so greedy speculative output equals plain greedy output only up to "
        "near-ties of the top two logits; sampling keeps the target's distribution"
    )

    def __init__(
        self,
        model_path: Path,
        *,
        name: str | None = None,
        context_size: int = 2048,
        batch_size: int = 256,
        threads: int = 2,
        threads_batch: int = 2,
        gpu_layers: int = 0,
        gpu_device: int | None = None,
        prefix_slots: int = 4,
        base_sha256: str | None = None,
        flash_attn: bool = True,
    ):
        init_backend(gpu_device)
        path = Path(model_path)
        if not path.is_file():
            raise EngineError(f"model file {path} does not exist")
        self._init_state(name or path.stem, prefix_slots)
        self.base_sha256 = base_sha256

        mparams = ll.llama_model_default_params()
        mparams.n_gpu_layers = gpu_layers
        gpus = gpu_devices() if gpu_layers > 0 else []
        if gpu_layers > 0 and not gpus:
            why = "ASSISTANT_GPU=vulkan scripts/install.sh builds llama.cpp with Vulkan"
            log.warning(
                "gpu_layers = %d, but this llama.cpp build finds no GPU: it runs on the CPU (%s)", gpu_layers, why
            )
        elif gpus:
            log.info("%s: %d layers on %s", self._name, gpu_layers, ", ".join(gpus))
            self.batch_variance, self.batch_variance_matters = self.GPU_VARIANCE, True
        self._software_gpu = any("llvmpipe" in g for g in gpus)
        if amx_compiled():
            log.warning(
                "llama.cpp was built with AMX kernels; disabling extra buffer types (rebuild with scripts/install.sh)"
            )
            mparams.use_extra_bufts = False
        recent_errors.clear()
        model = ll.llama_model_load_from_file(str(path).encode(), mparams)
        if not model:
            raise EngineError(f"cannot load model {path}: {last_errors('unknown cause')}")
        self._model = model
        self.vocab = LlamaVocab(model, self._name)

        cparams = ll.llama_context_default_params()
        # One KV stream per sequence, each `context_size` cells: a sequence's tokens then sit in its
        # cells in order. In one shared (unified) stream, new tokens went into cells freed by evicted
        # prefix slots, before their context's cells, and flash attention's result changed (~0.7 in
        # the logits). The price: memory for every slot's full context, and copies between streams
        # copy data (a whole stream: ~10 ms for the 1.5B's 57 MB at 2,048 tokens).
        cparams.n_ctx = context_size * (1 + prefix_slots)
        cparams.n_batch = batch_size
        cparams.n_ubatch = batch_size
        cparams.n_seq_max = 1 + prefix_slots
        cparams.kv_unified = False
        cparams.n_threads = threads
        cparams.n_threads_batch = threads_batch
        cparams.no_perf = True
        # A model kept on the CPU (the draft) stays there: no prefill batch is shipped to a GPU build's device.
        cparams.op_offload = gpu_layers > 0
        # Flash attention skips masked KV cells; the plain path sums over them, so its rounding
        # depends on where cells sit (prefix slots, rollbacks) and outputs drift with cache state.
        cparams.flash_attn_type = 1 if flash_attn else 0
        ctx = ll.llama_init_from_model(model, cparams)
        if not ctx:
            ll.llama_model_free(model)
            raise EngineError(
                f"cannot create a {context_size}-token context for {path}: {last_errors('out of memory?')}"
            )
        self._ctx = ctx
        self._mem = ll.llama_get_memory(ctx)
        self.context_size = int(ll.llama_n_ctx_seq(ctx))
        self.batch_size = batch_size
        self.threads = (threads, threads_batch)
        self._batch = ll.llama_batch_init(batch_size, 0, 1)
        self._adapters: dict[str, _Adapter] = {}
        self._copying: set[int] = set()  # sequences a queued copy (applied at the next decode) will overwrite
        self._active_adapter: str | None = None
        self.adapter_switches = 0

    @property
    def adapters(self) -> list[str]:
        return list(self._adapters)

    def set_threads(self, threads: int, threads_batch: int) -> None:
        """Change thread counts between requests (cheap); the voice loop lowers them while the ASR is busy."""
        ll.llama_set_n_threads(self._ctx, threads, threads_batch)
        self.threads = (threads, threads_batch)

    # --- adapters ------------------------------------------------------------

    def load_adapter(self, name: str, path: Path, scale: float = 1.0) -> None:
        """Load a GGUF LoRA once; requests then switch to it by name without reloading anything."""
        path = Path(path)
        manifest = read_adapter_manifest(path)
        check_base(manifest, path, self._name, self.base_sha256)
        recent_errors.clear()
        handle = ll.llama_adapter_lora_init(self._model, str(path).encode())
        if not handle:
            raise AdapterError(f"adapter {path} does not fit base '{self._name}': {last_errors('unknown cause')}")
        if self._software_gpu:
            known = "switching a Vulkan context between adapters crashed its driver thread in our tests"
            log.warning("adapter %s on Mesa's lavapipe: %s (about every second switch)", name, known)
        with self._lock:
            old = self._adapters.get(name)
            self._adapters[name] = _Adapter(name=name, path=path, scale=scale, handle=handle)
            if old is not None:
                if self._active_adapter == name:
                    self._apply_adapter(None)
                ll.llama_adapter_lora_free(old.handle)
                self._forget_adapter_state(name)

    def _apply_adapter(self, name: str | None) -> None:
        if name == self._active_adapter:
            return
        if name is None:
            rc = ll.llama_set_adapters_lora(self._ctx, None, 0, None)
        else:
            adapter = self._adapters[name]
            handles = (ll.llama_adapter_lora_p_ctypes * 1)(adapter.handle)
            scales = (ctypes.c_float * 1)(adapter.scale)
            rc = ll.llama_set_adapters_lora(self._ctx, handles, 1, scales)
        if rc != 0:
            raise AdapterError(f"llama.cpp refused to switch to adapter {name!r} (code {rc})")
        self._active_adapter = name
        self.adapter_switches += 1

    def use_adapter(self, name: str | None) -> None:
        self._require_adapter(name)
        with self._lock:
            self._apply_adapter(name)

    # --- evaluation ----------------------------------------------------------

    def _decode(self, tokens: Sequence[int], start_pos: int, *, all_logits: bool = False) -> None:
        b = self._batch
        for off in range(0, len(tokens), self.batch_size):
            chunk = tokens[off : off + self.batch_size]
            last_chunk = off + self.batch_size >= len(tokens)
            if all_logits and not last_chunk:
                raise EngineError("a verify batch must fit in one llama.cpp batch")
            for i, tok in enumerate(chunk):
                b.token[i] = tok
                b.pos[i] = start_pos + off + i
                b.n_seq_id[i] = 1
                b.seq_id[i][0] = WORK_SEQ
                b.logits[i] = 1 if (all_logits or (last_chunk and i == len(chunk) - 1)) else 0
            b.n_tokens = len(chunk)
            rc = ll.llama_decode(self._ctx, b)
            self._copying.clear()  # a decode applies the queued copies first
            if rc != 0:
                # Whatever part of the chunk landed is unknown; forget it so the cache stays truthful.
                self.truncate(start_pos + off)
                raise EngineError(f"decode failed: {last_errors(f'llama_decode returned {rc}')}")
            self._cached.extend(chunk)

    def logits(self, index: int = -1) -> np.ndarray:
        ptr = ll.llama_get_logits_ith(self._ctx, index)
        if not ptr:  # llama.cpp says why in its log; reading through a null pointer would end the process
            raise EngineError(f"no logits for output {index}: {last_errors('llama_get_logits_ith returned NULL')}")
        return np.ctypeslib.as_array(ptr, shape=(self.n_vocab,))

    def truncate(self, n: int) -> None:
        if n < len(self._cached):
            if not ll.llama_memory_seq_rm(self._mem, WORK_SEQ, n, -1):
                self._drop_work_seq()
                return
            del self._cached[n:]

    def _seq_clear(self, seq: int) -> None:
        ll.llama_memory_seq_rm(self._mem, seq, 0, -1)

    def _seq_copy(self, src: int, dst: int, n: int) -> None:
        # Between streams llama.cpp copies only whole streams, at the next decode; the tail is cut here.
        ll.llama_memory_seq_cp(self._mem, src, dst, -1, -1)
        ll.llama_memory_seq_rm(self._mem, dst, n, -1)
        self._copying.add(dst)

    def _reset_kv(self) -> None:
        ll.llama_memory_clear(self._mem, True)

    def _seq_state(self, seq: int) -> bytes | None:
        size = ll.llama_state_seq_get_size(self._ctx, seq)
        buf = (ctypes.c_uint8 * size)()
        written = ll.llama_state_seq_get_data(self._ctx, buf, size, seq)
        return bytes(buf[:written]) if written else None

    def _set_seq_state(self, seq: int, state: bytes) -> bool:
        if seq in self._copying:
            return False  # the queued copy would overwrite it at the next decode: evaluate instead
        buf = (ctypes.c_uint8 * len(state)).from_buffer_copy(state)
        return bool(ll.llama_state_seq_set_data(self._ctx, buf, len(state), seq))

    def _release(self) -> None:
        for adapter in self._adapters.values():
            ll.llama_adapter_lora_free(adapter.handle)
        ll.llama_batch_free(self._batch)
        ll.llama_free(self._ctx)
        ll.llama_model_free(self._model)
