"""llama.cpp backend through llama-cpp-python's low-level C API.

The high-level `Llama` class fixes one LoRA per instance and disables mmap with
adapters; the low-level API lets us share one model across skills, switch adapters
per request, and drive the KV cache ourselves (prefix slots, speculative rollback).
"""

from __future__ import annotations

import collections
import ctypes
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import llama_cpp as ll
import numpy as np

from assistant.engine.local import WORK_SEQ, LocalEngine
from assistant.engine.lora import AdapterError, check_base, read_adapter_manifest
from assistant.engine.types import ChatMessage, EngineError

log = logging.getLogger("assistant.engine.llama_cpp")

_recent_errors: collections.deque[str] = collections.deque(maxlen=8)
_backend_lock = threading.Lock()
_backend_ready = False
_last_level = [2]  # GGML_LOG_LEVEL_CONT (5) continues the previous message at its level


@ll.llama_log_callback
def _log_callback(level: int, text: bytes, _user: ctypes.c_void_p) -> None:
    if level == 5:
        level = _last_level[0]
    _last_level[0] = level
    message = text.decode("utf-8", "replace").strip()
    if not message or message.strip(".") == "":
        return  # progress dots
    if level >= 4:
        _recent_errors.append(message)
    # llama.cpp warns about many harmless things; only errors reach the user's log level.
    log.log(logging.WARNING if level >= 4 else logging.DEBUG, "%s", message)


def _init_backend() -> None:
    global _backend_ready
    with _backend_lock:
        if not _backend_ready:
            ll.llama_log_set(_log_callback, ctypes.c_void_p(0))
            ll.llama_backend_init()
            _backend_ready = True


def system_info() -> str:
    _init_backend()
    return ll.llama_print_system_info().decode("utf-8", "replace")


def _amx_compiled() -> bool:
    # The stock wheel's AMX matmul crashes on multi-token batches (FACTS.md); if this
    # build has it, the documented workaround is to turn off the extra buffer types.
    return "AMX_INT8 = 1" in system_info()


_FTYPES = {
    "F32": "LLAMA_FTYPE_ALL_F32", "F16": "LLAMA_FTYPE_MOSTLY_F16", "BF16": "LLAMA_FTYPE_MOSTLY_BF16",
    "Q8_0": "LLAMA_FTYPE_MOSTLY_Q8_0", "Q4_0": "LLAMA_FTYPE_MOSTLY_Q4_0", "Q4_1": "LLAMA_FTYPE_MOSTLY_Q4_1",
    "Q4_K_M": "LLAMA_FTYPE_MOSTLY_Q4_K_M", "Q5_K_M": "LLAMA_FTYPE_MOSTLY_Q5_K_M", "Q6_K": "LLAMA_FTYPE_MOSTLY_Q6_K",
}  # fmt: skip


def quantize_model(source: Path, target: Path, ftype: str, threads: int = 0, embedding: str | None = None) -> None:
    """Re-quantize a GGUF with llama.cpp's own quantizer (deterministic for a given version).

    `embedding` sets the token embedding and output head's format (llama.cpp otherwise picks Q6_K for them)."""
    _init_backend()
    params = ll.llama_model_quantize_default_params()
    params.ftype = getattr(ll, _FTYPES[ftype])
    params.allow_requantize = True
    params.nthread = threads
    if embedding is not None:
        params.token_embedding_type = params.output_tensor_type = getattr(ll, f"GGML_TYPE_{embedding}")
    _recent_errors.clear()
    rc = ll.llama_model_quantize(str(source).encode(), str(target).encode(), ctypes.byref(params))
    if rc != 0:
        raise EngineError(f"quantizing {source} to {ftype} failed: {_last_errors(f'code {rc}')}")


def _last_errors(default: str) -> str:
    return "; ".join(_recent_errors) or default


@dataclass
class _Adapter:
    name: str
    path: Path
    scale: float
    handle: Any  # llama_adapter_lora_p


class LlamaVocab:
    """llama.cpp's tokenizer, chat template and GBNF grammar of one GGUF model.

    The llama.cpp engine uses its loaded model's; other backends (TVM) load a GGUF vocab-only
    (no weights, ~0.2 s) so every backend tokenizes and templates identically.
    """

    def __init__(self, model: Any, name: str, *, owned: bool = False):
        self._model, self._owned, self._name = model, owned, name
        self._vocab = ll.llama_model_get_vocab(model)
        self.n_tokens = int(ll.llama_vocab_n_tokens(self._vocab))
        self._template: bytes | None = ll.llama_model_chat_template(model, None)

    @classmethod
    def load(cls, path: Path, name: str | None = None) -> LlamaVocab:
        _init_backend()
        if not Path(path).is_file():
            raise EngineError(f"model file {path} does not exist")
        params = ll.llama_model_default_params()
        params.vocab_only = True
        _recent_errors.clear()
        model = ll.llama_model_load_from_file(str(path).encode(), params)
        if not model:
            raise EngineError(f"cannot read the vocabulary of {path}: {_last_errors('unknown cause')}")
        return cls(model, name or Path(path).stem, owned=True)

    def tokenize(self, text: str, *, special: bool = False) -> list[int]:
        data = text.encode("utf-8")
        capacity = len(data) + 16
        while True:
            buf = (ll.llama_token * capacity)()
            n = ll.llama_tokenize(self._vocab, data, len(data), buf, capacity, special, special)
            if n >= 0:
                return list(buf[:n])
            capacity = -n

    def token_bytes(self, token: int) -> bytes:
        buf = ctypes.create_string_buffer(64)
        n = ll.llama_token_to_piece(self._vocab, token, buf, len(buf), 0, False)
        if n < 0:
            buf = ctypes.create_string_buffer(-n)
            n = ll.llama_token_to_piece(self._vocab, token, buf, len(buf), 0, False)
        return buf.raw[:n]

    def token_text(self, token: int) -> bytes:
        raw = ll.llama_vocab_get_text(self._vocab, token)
        return bytes(raw) if raw is not None else b""

    def is_eog(self, token: int) -> bool:
        return bool(ll.llama_vocab_is_eog(self._vocab, token))

    def apply_chat_template(self, messages: Sequence[ChatMessage], *, add_generation_prompt: bool = True) -> str:
        if not messages:
            raise EngineError("a chat request needs at least one message")
        keep = [(m.role.encode(), m.content.encode("utf-8")) for m in messages]
        arr = (ll.llama_chat_message * len(keep))()
        for i, (role, content) in enumerate(keep):
            arr[i].role = role
            arr[i].content = content
        size = 2 * sum(len(c) + len(r) for r, c in keep) + 512
        for _ in range(2):
            buf = ctypes.create_string_buffer(size)
            n = ll.llama_chat_apply_template(self._template, arr, len(keep), add_generation_prompt, buf, size)
            if n < 0:
                raise EngineError(f"model {self._name} has no chat template llama.cpp understands; pass a plain prompt")
            if n <= size:
                return buf.raw[:n].decode("utf-8")
            size = n + 1
        raise EngineError("chat template output did not fit")  # pragma: no cover

    def grammar(self, text: str) -> _Grammar:
        return _Grammar(self._vocab, self.n_tokens, text)

    def close(self) -> None:
        if self._owned and self._model:
            ll.llama_model_free(self._model)
            self._model = None


class LlamaCppEngine(LocalEngine):
    """One loaded GGUF model with one context; requests are serialized by a lock."""

    vocab: LlamaVocab

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
        prefix_slots: int = 4,
        base_sha256: str | None = None,
        flash_attn: bool = True,
    ):
        _init_backend()
        path = Path(model_path)
        if not path.is_file():
            raise EngineError(f"model file {path} does not exist")
        self._init_state(name or path.stem, prefix_slots)
        self.base_sha256 = base_sha256

        mparams = ll.llama_model_default_params()
        mparams.n_gpu_layers = gpu_layers
        if _amx_compiled():
            log.warning(
                "llama.cpp was built with AMX kernels; disabling extra buffer types (rebuild with scripts/install.sh)"
            )
            mparams.use_extra_bufts = False
        _recent_errors.clear()
        model = ll.llama_model_load_from_file(str(path).encode(), mparams)
        if not model:
            raise EngineError(f"cannot load model {path}: {_last_errors('unknown cause')}")
        self._model = model
        self.vocab = LlamaVocab(model, self._name)

        cparams = ll.llama_context_default_params()
        cparams.n_ctx = context_size
        cparams.n_batch = batch_size
        cparams.n_ubatch = batch_size
        cparams.n_seq_max = 1 + prefix_slots
        cparams.kv_unified = True  # prefix slots share cells with the working sequence: seq_cp copies no data
        cparams.n_threads = threads
        cparams.n_threads_batch = threads_batch
        cparams.no_perf = True
        # Flash attention skips masked KV cells; the plain path sums over them, so its rounding
        # depends on where cells sit (prefix slots, rollbacks) and outputs drift with cache state.
        cparams.flash_attn_type = 1 if flash_attn else 0
        ctx = ll.llama_init_from_model(model, cparams)
        if not ctx:
            ll.llama_model_free(model)
            raise EngineError(
                f"cannot create a {context_size}-token context for {path}: {_last_errors('out of memory?')}"
            )
        self._ctx = ctx
        self._mem = ll.llama_get_memory(ctx)
        self.context_size = int(ll.llama_n_ctx(ctx))
        self.batch_size = batch_size
        self.threads = (threads, threads_batch)
        self._batch = ll.llama_batch_init(batch_size, 0, 1)
        self._adapters: dict[str, _Adapter] = {}
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
        _recent_errors.clear()
        handle = ll.llama_adapter_lora_init(self._model, str(path).encode())
        if not handle:
            raise AdapterError(f"adapter {path} does not fit base '{self._name}': {_last_errors('unknown cause')}")
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
            if rc != 0:
                # Whatever part of the chunk landed is unknown; forget it so the cache stays truthful.
                self.truncate(start_pos + off)
                raise EngineError(f"decode failed: {_last_errors(f'llama_decode returned {rc}')}")
            self._cached.extend(chunk)

    def logits(self, index: int = -1) -> np.ndarray:
        ptr = ll.llama_get_logits_ith(self._ctx, index)
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
        ll.llama_memory_seq_cp(self._mem, src, dst, 0, n)

    def _reset_kv(self) -> None:
        ll.llama_memory_clear(self._mem, True)

    def _release(self) -> None:
        for adapter in self._adapters.values():
            ll.llama_adapter_lora_free(adapter.handle)
        ll.llama_batch_free(self._batch)
        ll.llama_free(self._ctx)
        ll.llama_model_free(self._model)


class _Grammar:
    """llama.cpp's GBNF grammar as a logit mask: tokens the grammar cannot accept get -inf."""

    def __init__(self, vocab: Any, n_vocab: int, text: str):
        _recent_errors.clear()
        self._smpl = ll.llama_sampler_init_grammar(vocab, text.encode("utf-8"), b"root")
        if not self._smpl:
            raise EngineError(f"invalid grammar: {_last_errors('llama.cpp could not parse it')}")
        self._ids = np.arange(n_vocab, dtype=np.int32)
        self._data = np.zeros(n_vocab, dtype=[("id", "<i4"), ("logit", "<f4"), ("p", "<f4")])
        self._array = ll.llama_token_data_array(
            data=self._data.ctypes.data_as(ctypes.POINTER(ll.llama_token_data)), size=n_vocab, selected=-1
        )

    def mask(self, logits: np.ndarray) -> np.ndarray:
        self._data["id"] = self._ids
        self._data["logit"] = logits
        self._array.size, self._array.selected, self._array.sorted = len(self._ids), -1, False
        ll.llama_sampler_apply(self._smpl, ctypes.byref(self._array))
        out = np.full(len(self._ids), -np.inf, dtype=np.float32)
        n = int(self._array.size)
        out[self._data["id"][:n]] = self._data["logit"][:n]
        if not np.isfinite(out).any():
            raise EngineError("the grammar allows no further token (is it ambiguous about where it ends?)")
        return out

    def accept(self, token: int) -> None:
        ll.llama_sampler_accept(self._smpl, token)

    def close(self) -> None:
        if self._smpl:
            ll.llama_sampler_free(self._smpl)
            self._smpl = None
