"""Running a compiled model: sequences in TVM's paged KV cache (0 decodes, others keep prefixes)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from assistant.engine.lora import check_base, read_adapter_manifest
from assistant.engine.tvm.compile import compile_shape
from assistant.engine.tvm.target import TargetKind, device, device_available
from assistant.engine.tvm.weights import LORA_SLOTS, LlamaShape, load_weights, lora_slot_arrays, open_gguf
from assistant.engine.types import EngineError

PAGE = 16  # tokens per KV page
CPU_PREFILL_CHUNK = 128


class TvmLlama:
    """The base model compiled for `kind`, its weights on the device, one sequence of KV state."""

    def __init__(
        self,
        gguf_path: Path,
        model_sha256: str,
        cache_dir: Path,
        *,
        kind: TargetKind = "llvm",
        int8_activations: bool = False,
        threads: int = 2,
        context_size: int = 2048,
        prefill_chunk: int | None = None,
        sequences: int = 1,
    ):
        import tvm
        from tvm import relax

        if not device_available(kind):
            raise EngineError(f"no {kind} device on this machine: build for it with `assistant models compile`")
        gguf = open_gguf(gguf_path)
        self.shape = LlamaShape.from_gguf(gguf)
        library, names, self.compile_s = compile_shape(
            self.shape, model_sha256, kind, cache_dir, threads=threads, int8_activations=int8_activations
        )
        weights = load_weights(gguf, self.shape)
        self.device = device(kind)
        self.vm = relax.VirtualMachine(tvm.runtime.load_module(str(library)), self.device)
        self.params = [tvm.runtime.tensor(np.ascontiguousarray(weights[n]), self.device) for n in names]
        # LoRA slots: host copies of the stacked A/B arrays, written into the device tensors on load.
        self._lora_host = {n: weights[n] for n in names if ".lora_" in n}
        self._param_index = {n: i for i, n in enumerate(names)}
        self.adapters: dict[str, int] = {}
        self.model_sha256 = model_sha256
        if prefill_chunk is None:
            # On a CPU a chunk's activations should stay in cache: a 512-token prompt prefilled at
            # 36 tok/s in one chunk, 69 in chunks of 128 (95 for a 128-token prompt).
            prefill_chunk = CPU_PREFILL_CHUNK if kind == "llvm" else 512
        self.context_size, self.prefill_chunk = context_size, prefill_chunk
        self._shape_tuple = shape_tuple = tvm.runtime.ShapeTuple
        # One page budget of `context_size` tokens for all sequences; a forked prefix shares its pages.
        self._kv = self.vm["create_kv"](shape_tuple([sequences]), shape_tuple([context_size]),
                                        shape_tuple([prefill_chunk]), shape_tuple([PAGE]))  # fmt: skip
        # The slot index a request with an adapter passes to the graph, made once (decode passes one per token).
        self._slot_ids = [tvm.runtime.tensor(np.array([k], np.int32), self.device) for k in range(LORA_SLOTS)]
        self._begin = tvm.get_global_func("vm.builtin.kv_state_begin_forward")
        self._end = tvm.get_global_func("vm.builtin.kv_state_end_forward")
        self._add = tvm.get_global_func("vm.builtin.kv_state_add_sequence")
        self._remove = tvm.get_global_func("vm.builtin.kv_state_remove_sequence")
        self._popn = tvm.get_global_func("vm.builtin.kv_state_popn")
        self._fork = tvm.get_global_func("vm.builtin.kv_state_fork_sequence")
        self._free_pages = tvm.get_global_func("vm.builtin.attention_kv_cache_get_num_available_pages")
        self._tvm = tvm
        self.n_past = 0  # tokens in sequence 0
        self._live = {0}
        self._add(self._kv, 0)

    def load_adapter(self, name: str, path: Path, scale: float = 1.0) -> None:
        """Make a GGUF LoRA resident in a free slot (no recompile; requests pick it by name)."""
        manifest = read_adapter_manifest(path)
        check_base(manifest, path, manifest.base_model, self.model_sha256)
        free = [k for k in range(LORA_SLOTS) if k not in self.adapters.values()]
        slot = self.adapters[name] if name in self.adapters else (free[0] if free else None)
        if slot is None:
            raise EngineError(f"all {LORA_SLOTS} adapter slots are taken ({', '.join(self.adapters)})")
        for param, array in lora_slot_arrays(path, self.shape, scale).items():
            host = self._lora_host[param]
            host[slot] = array
            self.params[self._param_index[param]].copyfrom(host)
        self.adapters[name] = slot

    def _slot(self, adapter: str | None) -> Any:
        if adapter is not None and adapter not in self.adapters:
            raise EngineError(f"unknown adapter '{adapter}' (loaded: {', '.join(self.adapters) or 'none'})")
        return None if adapter is None else self._slot_ids[self.adapters[adapter]]

    def reset(self) -> None:
        for seq in self._live - {0}:
            self.clear(seq)
        self.clear(0)

    def clear(self, seq: int) -> None:
        """Forget a sequence's tokens (sequence 0 stays, empty)."""
        if seq in self._live:
            self._remove(self._kv, seq)
            self._live.discard(seq)
        if seq == 0:
            self._add(self._kv, 0)
            self._live.add(0)
            self.n_past = 0

    def copy(self, src: int, dst: int, n: int) -> None:
        """Sequence `dst` becomes the first n tokens of `src`, sharing its pages (nothing is recomputed)."""
        if dst in self._live:
            self._remove(self._kv, dst)
        self._fork(self._kv, src, dst, n)
        self._live.add(dst)
        if dst == 0:
            self.n_past = n

    def free_tokens(self) -> int:
        """Tokens the page budget still holds (shared across sequences)."""
        return int(self._free_pages(self._kv)) * PAGE

    def _run(self, fn: str, tokens: Sequence[int], slot: Any) -> np.ndarray:
        if self.n_past + len(tokens) > self.context_size:
            raise EngineError(f"{self.n_past + len(tokens)} tokens exceed the context of {self.context_size}")
        ids = self._tvm.runtime.tensor(np.asarray(tokens, dtype=np.int32), self.device)
        self._begin(self._kv, self._shape_tuple([0]), self._shape_tuple([len(tokens)]))
        try:
            if slot is None:  # no adapter: the graph without LoRA terms
                logits, self._kv = self.vm[f"{fn}_base"](ids, self._kv, self.params)
            else:
                logits, self._kv = self.vm[fn](ids, slot, self._kv, self.params)
            self._end(self._kv)
        except RuntimeError as exc:  # TVM's errors (InternalError, ...) derive from it
            self.clear(0)  # what part of the pass landed is unknown: start the sequence over
            cause = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
            raise EngineError(f"the compiled model failed on {len(tokens)} tokens: {cause}") from exc
        self.n_past += len(tokens)
        return np.asarray(logits.numpy()).reshape(len(tokens) if fn == "verify" else 1, -1)

    def prefill(self, tokens: Sequence[int], adapter: str | None = None) -> np.ndarray:
        """Logits after the last of `tokens` (fed in chunks of at most `prefill_chunk`)."""
        logits: np.ndarray | None = None
        slot = self._slot(adapter)
        for start in range(0, len(tokens), self.prefill_chunk):
            logits = self._run("prefill", tokens[start : start + self.prefill_chunk], slot)
        if logits is None:
            raise EngineError("prefill of no tokens")
        return logits[0]

    def decode(self, token: int, adapter: str | None = None) -> np.ndarray:
        return self._run("decode", [token], self._slot(adapter))[0]

    def verify(self, tokens: Sequence[int], adapter: str | None = None) -> np.ndarray:
        """(len(tokens), vocab) logits: row i predicts what follows tokens[i]."""
        return self._run("verify", tokens, self._slot(adapter))

    def rollback(self, n: int) -> None:
        """Forget the last n tokens of the sequence (draft tokens the target rejected)."""
        if n > 0:
            self._popn(self._kv, 0, n)
            self.n_past -= n

    def greedy(self, prompt: Sequence[int], max_tokens: int, stop: Any = (), adapter: str | None = None) -> list[int]:
        """Greedy continuation of `prompt` from an empty sequence; stops after a token in `stop`."""
        self.reset()
        out = [int(np.argmax(self.prefill(prompt, adapter)))]
        while len(out) < max_tokens and out[-1] not in stop:
            out.append(int(np.argmax(self.decode(out[-1], adapter))))
        return out
