"""Running a compiled model: one sequence in TVM's paged KV cache, greedy decoding."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from gguf import GGUFReader

from assistant.engine.tvm.model import LlamaShape, compile_model, load_weights
from assistant.engine.tvm.target import TargetKind, device_available
from assistant.engine.types import EngineError


class TvmLlama:
    """The base model compiled for `kind`, its weights on the device, one sequence of KV state."""

    def __init__(
        self,
        gguf_path: Path,
        model_sha256: str,
        cache_dir: Path,
        *,
        kind: TargetKind = "llvm",
        threads: int = 2,
        context_size: int = 2048,
        prefill_chunk: int = 512,
    ):
        import tvm
        from tvm import relax

        if not device_available(kind):
            raise EngineError(f"no {kind} device on this machine: build for it with `assistant models compile`")
        library, names, self.compile_s = compile_model(gguf_path, model_sha256, kind, cache_dir, threads=threads)
        reader = GGUFReader(str(gguf_path))
        self.shape = LlamaShape.from_gguf(reader, gguf_path)
        weights = load_weights(reader, self.shape, gguf_path)
        self.device = {"llvm": tvm.cpu, "cuda": tvm.cuda, "vulkan": tvm.vulkan}[kind](0)
        self.vm = relax.VirtualMachine(tvm.runtime.load_module(str(library)), self.device)
        self.params = [tvm.runtime.tensor(np.ascontiguousarray(weights[n]), self.device) for n in names]
        self.context_size, self.prefill_chunk = context_size, prefill_chunk
        shape_tuple = tvm.runtime.ShapeTuple
        self._shape = shape_tuple
        self._kv = self.vm["create_kv"](shape_tuple([1]), shape_tuple([context_size]), shape_tuple([prefill_chunk]),
                                        shape_tuple([16]))  # fmt: skip
        self._begin = tvm.get_global_func("vm.builtin.kv_state_begin_forward")
        self._end = tvm.get_global_func("vm.builtin.kv_state_end_forward")
        self._add = tvm.get_global_func("vm.builtin.kv_state_add_sequence")
        self._remove = tvm.get_global_func("vm.builtin.kv_state_remove_sequence")
        self._tvm = tvm
        self.n_past = 0
        self._add(self._kv, 0)

    def reset(self) -> None:
        self._remove(self._kv, 0)
        self._add(self._kv, 0)
        self.n_past = 0

    def _run(self, fn: str, tokens: Sequence[int]) -> np.ndarray:
        if self.n_past + len(tokens) > self.context_size:
            raise EngineError(f"{self.n_past + len(tokens)} tokens exceed the context of {self.context_size}")
        ids = self._tvm.runtime.tensor(np.asarray(tokens, dtype=np.int32), self.device)
        self._begin(self._kv, self._shape([0]), self._shape([len(tokens)]))
        logits, self._kv = self.vm[fn](ids, self._kv, self.params)
        self._end(self._kv)
        self.n_past += len(tokens)
        return np.asarray(logits.numpy()).reshape(-1)

    def prefill(self, tokens: Sequence[int]) -> np.ndarray:
        """Logits after the last of `tokens` (fed in chunks of at most `prefill_chunk`)."""
        logits: np.ndarray | None = None
        for start in range(0, len(tokens), self.prefill_chunk):
            logits = self._run("prefill", tokens[start : start + self.prefill_chunk])
        if logits is None:
            raise EngineError("prefill of no tokens")
        return logits

    def decode(self, token: int) -> np.ndarray:
        return self._run("decode", [token])

    def greedy(self, prompt: Sequence[int], max_tokens: int, stop: Any = ()) -> list[int]:
        """Greedy continuation of `prompt` from an empty sequence; stops after a token in `stop`."""
        self.reset()
        out = [int(np.argmax(self.prefill(prompt)))]
        while len(out) < max_tokens and out[-1] not in stop:
            out.append(int(np.argmax(self.decode(out[-1]))))
        return out
