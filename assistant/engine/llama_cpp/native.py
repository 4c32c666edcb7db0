"""llama.cpp's library through llama-cpp-python's low-level C API: backend start-up and log
capture, build info, the quantizer, and a model's vocabulary (tokenizer, chat template, GBNF
grammar). Every backend tokenizes through `LlamaVocab`, so llama.cpp and TVM agree on tokens.
"""

from __future__ import annotations

import collections
import ctypes
import logging
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import llama_cpp as ll
import numpy as np

from assistant.engine.types import ChatMessage, EngineError

log = logging.getLogger("assistant.engine.llama_cpp")

recent_errors: collections.deque[str] = collections.deque(maxlen=8)
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
        recent_errors.append(message)
    # llama.cpp warns about many harmless things; only errors reach the user's log level.
    log.log(logging.WARNING if level >= 4 else logging.DEBUG, "%s", message)


def init_backend(gpu_device: int | None = None) -> None:
    """Start llama.cpp once per process. `gpu_device`: the Vulkan device index the GPU layers go to (it must be
    chosen before the start: ggml enumerates its devices then); a software device such as Mesa's lavapipe is
    only used when named this way."""
    global _backend_ready
    with _backend_lock:
        if gpu_device is not None:
            chosen = os.environ.get("GGML_VK_VISIBLE_DEVICES")
            if not _backend_ready:
                os.environ["GGML_VK_VISIBLE_DEVICES"] = str(gpu_device)
            elif chosen != str(gpu_device):
                log.warning("engine.gpu_device = %d comes too late: llama.cpp already started with Vulkan devices %s "
                            "(one process uses one choice)", gpu_device, chosen or "it found")  # fmt: skip
        if not _backend_ready:
            ll.llama_log_set(_log_callback, ctypes.c_void_p(0))
            ll.llama_backend_init()
            _backend_ready = True


def gpu_devices() -> list[str]:
    """Descriptions of the GPUs this llama.cpp build can offload to (empty: a CPU build, or no device)."""
    init_backend()
    try:
        lib = ll.llama_cpp._lib  # the libllama llama-cpp-python loaded: its ggml is the one in use
        count, get, kind, describe = (lib.ggml_backend_dev_count, lib.ggml_backend_dev_get, lib.ggml_backend_dev_type,
                                      lib.ggml_backend_dev_description)  # fmt: skip
    except AttributeError as exc:
        log.warning("cannot list llama.cpp's devices (%s): treating this build as CPU-only", exc)
        return []
    count.restype = ctypes.c_size_t
    get.restype, get.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
    kind.restype, kind.argtypes = ctypes.c_int, [ctypes.c_void_p]
    describe.restype, describe.argtypes = ctypes.c_char_p, [ctypes.c_void_p]
    found = []
    for i in range(count()):
        dev = get(i)
        if kind(dev) in (1, 2):  # GGML_BACKEND_DEVICE_TYPE_GPU, _IGPU
            found.append((describe(dev) or b"?").decode("utf-8", "replace"))
    return found


def system_info() -> str:
    init_backend()
    return ll.llama_print_system_info().decode("utf-8", "replace")


def amx_compiled() -> bool:
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
    init_backend()
    params = ll.llama_model_quantize_default_params()
    params.ftype = getattr(ll, _FTYPES[ftype])
    params.allow_requantize = True
    params.nthread = threads
    if embedding is not None:
        params.token_embedding_type = params.output_tensor_type = getattr(ll, f"GGML_TYPE_{embedding}")
    recent_errors.clear()
    rc = ll.llama_model_quantize(str(source).encode(), str(target).encode(), ctypes.byref(params))
    if rc != 0:
        raise EngineError(f"quantizing {source} to {ftype} failed: {last_errors(f'code {rc}')}")


def last_errors(default: str) -> str:
    return "; ".join(recent_errors) or default


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
        init_backend()
        if not Path(path).is_file():
            raise EngineError(f"model file {path} does not exist")
        params = ll.llama_model_default_params()
        params.vocab_only = True
        recent_errors.clear()
        model = ll.llama_model_load_from_file(str(path).encode(), params)
        if not model:
            raise EngineError(f"cannot read the vocabulary of {path}: {last_errors('unknown cause')}")
        return cls(model, name or Path(path).stem, owned=True)

    def tokenize(self, text: str, *, special: bool = False, add_bos: bool | None = None) -> list[int]:
        """`special` parses control tokens such as <|im_start|>; `add_bos` (default: `special`) adds BOS
        if the model wants one."""
        data = text.encode("utf-8")
        capacity = len(data) + 16
        bos = special if add_bos is None else add_bos
        while True:
            buf = (ll.llama_token * capacity)()
            n = ll.llama_tokenize(self._vocab, data, len(data), buf, capacity, bos, special)
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


class _Grammar:
    """llama.cpp's GBNF grammar as a logit mask: tokens the grammar cannot accept get -inf."""

    def __init__(self, vocab: Any, n_vocab: int, text: str):
        recent_errors.clear()
        self._smpl = ll.llama_sampler_init_grammar(vocab, text.encode("utf-8"), b"root")
        if not self._smpl:
            raise EngineError(f"invalid grammar: {last_errors('llama.cpp could not parse it')}")
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
