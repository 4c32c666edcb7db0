"""The compiled TVM model behind the `Engine` protocol.

Tokenizer, chat template and grammar come from llama.cpp reading the same GGUF vocab-only, so
both backends tokenize identically and a llama.cpp draft can speculate for this target.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from assistant.engine.llama_cpp import LlamaVocab
from assistant.engine.local import LocalEngine
from assistant.engine.tvm.runtime import CPU_PREFILL_CHUNK, PAGE, TvmLlama
from assistant.engine.tvm.target import TargetKind
from assistant.engine.types import EngineError


class TvmEngine(LocalEngine):
    """One compiled model with its paged KV cache; requests are serialized by a lock."""

    vocab: LlamaVocab
    batch_variance = (
        "TVM's paged-KV attention has one kernel for a single new token and another for several; they sum in "
        "other orders, so logits differ by about 1e-5 and greedy speculation can part from plain greedy "
        "decoding only where the top two logits are that close"
    )
    INT8_VARIANCE = (
        "this build rounds matmul inputs to int8 (engine.tvm.int8_activations): the 1e-5 difference between "
        "TVM's attention kernels for one token and for several can flip a rounding, so verify batches differ "
        "from one-token decodes by up to about 1e-2 and greedy speculation can part from plain greedy decoding"
    )

    def __init__(
        self,
        model_path: Path,
        *,
        model_sha256: str,
        cache_dir: Path,
        name: str | None = None,
        kind: TargetKind = "llvm",
        int8_activations: bool = False,
        context_size: int = 2048,
        batch_size: int = 256,
        threads: int = 2,
        prefix_slots: int = 4,
    ):
        path = Path(model_path)
        self._init_state(name or path.stem, prefix_slots)
        self.base_sha256 = model_sha256
        self.vocab = LlamaVocab.load(path, self._name)
        try:
            self.model = TvmLlama(
                path, model_sha256, cache_dir, kind=kind, int8_activations=int8_activations, threads=threads,
                context_size=context_size,
                prefill_chunk=min(batch_size, CPU_PREFILL_CHUNK) if kind == "llvm" else batch_size,
                sequences=1 + prefix_slots,
            )  # fmt: skip
        except BaseException:
            self.vocab.close()
            raise
        self.context_size, self.batch_size = context_size, self.model.prefill_chunk
        self.kind = kind
        if int8_activations:
            self.batch_variance, self.batch_variance_matters = self.INT8_VARIANCE, True
        self.compile_s = self.model.compile_s
        self._rows = np.zeros((1, self.n_vocab), np.float32)
        self._active_adapter: str | None = None
        self.set_threads(threads, threads)

    def set_threads(self, threads: int, threads_batch: int) -> None:
        """TVM has one CPU thread pool (host code, and all of an llvm build); resized between requests."""
        import tvm

        tvm.get_global_func("runtime.config_threadpool")(1, max(threads, threads_batch))
        self.threads = (threads, threads_batch)

    # --- adapters: A/B slots of the compiled graph -----------------------------------

    @property
    def adapters(self) -> list[str]:
        return list(self.model.adapters)

    def load_adapter(self, name: str, path: Path, scale: float = 1.0) -> None:
        """Copy a GGUF LoRA into a free slot of the compiled graph (no recompile); requests pick it by name."""
        with self._lock:
            self.model.load_adapter(name, Path(path), scale)
            self._forget_adapter_state(name)

    def use_adapter(self, name: str | None) -> None:
        self._require_adapter(name)
        self._active_adapter = name

    # --- KV state ------------------------------------------------------------------------

    def _decode(self, tokens: Sequence[int], start_pos: int, *, all_logits: bool = False) -> None:
        if start_pos != len(self._cached) or start_pos != self.model.n_past:
            raise EngineError(f"decode at {start_pos} but the sequence holds {self.model.n_past} tokens")
        if all_logits and len(tokens) > self.batch_size:
            raise EngineError(f"a verify batch of {len(tokens)} tokens exceeds batch_size {self.batch_size}")
        if self.model.free_tokens() < len(tokens) + PAGE:
            self._evict_slots()  # cached prefixes give way to the request
        try:
            if all_logits and len(tokens) > 1:
                self._rows = self.model.verify(tokens, self._active_adapter)
            elif len(tokens) == 1:
                self._rows = self.model.decode(tokens[0], self._active_adapter)[None, :]
            else:
                self._rows = self.model.prefill(tokens, self._active_adapter)[None, :]
        except EngineError:
            self._cached = self._cached[: self.model.n_past]  # a failed pass leaves the sequence empty
            raise
        self._cached.extend(tokens)

    def _evict_slots(self) -> None:
        for slot in self._slots:
            if slot.tokens:
                self.model.clear(slot.seq)
                slot.tokens, slot.adapter = [], None

    def logits(self, index: int = -1) -> np.ndarray:
        return self._rows[index]

    def truncate(self, n: int) -> None:
        if n < len(self._cached):
            self.model.rollback(len(self._cached) - n)
            del self._cached[n:]

    def _seq_clear(self, seq: int) -> None:
        self.model.clear(seq)

    def _seq_copy(self, src: int, dst: int, n: int) -> None:
        self.model.copy(src, dst, n)

    def _reset_kv(self) -> None:
        self.model.reset()

    def _seq_state(self, seq: int) -> bytes | None:
        return None  # the paged KV cache has no export: long prefixes are evaluated once per process

    def _set_seq_state(self, seq: int, state: bytes) -> bool:
        return False

    def _release(self) -> None:
        self.vocab.close()
        del self.model
