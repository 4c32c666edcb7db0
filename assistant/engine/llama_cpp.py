"""llama.cpp backend through llama-cpp-python's low-level C API.

The high-level `Llama` class fixes one LoRA per instance and disables mmap with
adapters; the low-level API lets us share one model, switch adapters per request
and drive the KV cache ourselves (prefix reuse now, speculative decoding later).
"""

from __future__ import annotations

import codecs
import collections
import ctypes
import logging
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import llama_cpp as ll
import numpy as np

from assistant.engine.sampling import sample_token
from assistant.engine.types import ChatMessage, EngineError, FinishReason, GenerationStats, Sampling

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


class LlamaCppEngine:
    """One loaded GGUF model with one context; not thread-safe per request, so requests are serialized."""

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
    ):
        _init_backend()
        path = Path(model_path)
        if not path.is_file():
            raise EngineError(f"model file {path} does not exist")
        self._name = name or path.stem
        self._lock = threading.Lock()
        self._closed = False

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
            cause = "; ".join(_recent_errors) or "unknown cause"
            raise EngineError(f"cannot load model {path}: {cause}")
        self._model = model
        self._vocab = ll.llama_model_get_vocab(model)
        self.n_vocab = int(ll.llama_vocab_n_tokens(self._vocab))

        cparams = ll.llama_context_default_params()
        cparams.n_ctx = context_size
        cparams.n_batch = batch_size
        cparams.n_ubatch = batch_size
        cparams.n_seq_max = 1
        cparams.n_threads = threads
        cparams.n_threads_batch = threads_batch
        cparams.no_perf = True
        ctx = ll.llama_init_from_model(model, cparams)
        if not ctx:
            ll.llama_model_free(model)
            cause = "; ".join(_recent_errors) or "out of memory?"
            raise EngineError(f"cannot create a {context_size}-token context for {path}: {cause}")
        self._ctx = ctx
        self._mem = ll.llama_get_memory(ctx)
        self.context_size = int(ll.llama_n_ctx(ctx))
        self.batch_size = batch_size
        self._batch = ll.llama_batch_init(batch_size, 0, 1)
        self._cached: list[int] = []  # tokens whose KV state sits in sequence 0
        template = ll.llama_model_chat_template(model, None)
        self._template: bytes | None = template
        self._add_bos = bool(ll.llama_vocab_get_add_bos(self._vocab))

    # --- properties ----------------------------------------------------------

    @property
    def model_name(self) -> str:
        return self._name

    def set_threads(self, threads: int, threads_batch: int) -> None:
        ll.llama_set_n_threads(self._ctx, threads, threads_batch)

    # --- text <-> tokens -----------------------------------------------------

    def tokenize(self, text: str, *, special: bool = False) -> list[int]:
        """`special` parses control tokens such as <|im_start|> and adds BOS if the model wants one."""
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

    def detokenize(self, tokens: Sequence[int]) -> str:
        return b"".join(self.token_bytes(t) for t in tokens).decode("utf-8", "replace")

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

    # --- evaluation ----------------------------------------------------------

    def _decode(self, tokens: Sequence[int], start_pos: int, *, logits_last: bool = True) -> None:
        """Evaluate tokens at consecutive positions of sequence 0, in batch-size chunks."""
        b = self._batch
        for off in range(0, len(tokens), self.batch_size):
            chunk = tokens[off : off + self.batch_size]
            last_chunk = off + self.batch_size >= len(tokens)
            for i, tok in enumerate(chunk):
                b.token[i] = tok
                b.pos[i] = start_pos + off + i
                b.n_seq_id[i] = 1
                b.seq_id[i][0] = 0
                b.logits[i] = 1 if (logits_last and last_chunk and i == len(chunk) - 1) else 0
            b.n_tokens = len(chunk)
            rc = ll.llama_decode(self._ctx, b)
            if rc != 0:
                # Whatever part of the chunk landed is unknown; forget it so the cache stays truthful.
                ll.llama_memory_seq_rm(self._mem, 0, start_pos + off, -1)
                del self._cached[start_pos + off :]
                cause = "; ".join(_recent_errors) or f"llama_decode returned {rc}"
                raise EngineError(f"decode failed: {cause}")
            self._cached.extend(chunk)

    def _logits(self) -> np.ndarray:
        ptr = ll.llama_get_logits_ith(self._ctx, -1)
        return np.ctypeslib.as_array(ptr, shape=(self.n_vocab,))

    def _prefill(self, tokens: list[int]) -> int:
        """Bring the KV cache to `tokens`, reusing the longest cached prefix. Returns tokens reused."""
        common = 0
        limit = min(len(tokens), len(self._cached))
        while common < limit and tokens[common] == self._cached[common]:
            common += 1
        if common == len(tokens):
            common -= 1  # the last prompt token must be evaluated again to get its logits
        if common < len(self._cached):
            if not ll.llama_memory_seq_rm(self._mem, 0, common, -1):
                ll.llama_memory_clear(self._mem, True)
                common = 0
            del self._cached[common:]
        self._decode(tokens[common:], common)
        return common

    def reset(self) -> None:
        """Drop all cached KV state."""
        with self._lock:
            ll.llama_memory_clear(self._mem, True)
            self._cached.clear()

    # --- generation ----------------------------------------------------------

    def prompt_tokens(self, prompt: str | Sequence[ChatMessage]) -> list[int]:
        if isinstance(prompt, str):
            return self.tokenize(prompt, special=True)
        return self.tokenize(self.apply_chat_template(prompt), special=True)

    def generate(
        self,
        prompt: str | Sequence[ChatMessage],
        *,
        max_tokens: int = 128,
        sampling: Sampling | None = None,
        stop: Sequence[str] = (),
        cancel: threading.Event | None = None,
    ) -> LlamaGeneration:
        if self._closed:
            raise EngineError("engine is closed")
        tokens = self.prompt_tokens(prompt)
        if not tokens:
            raise EngineError("empty prompt")
        if len(tokens) >= self.context_size:
            raise EngineError(
                f"prompt is {len(tokens)} tokens but the context holds {self.context_size}: "
                "shorten the conversation or raise engine.context_size"
            )
        return LlamaGeneration(self, tokens, max_tokens, sampling or Sampling(), tuple(stop), cancel)

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            ll.llama_batch_free(self._batch)
            ll.llama_free(self._ctx)
            ll.llama_model_free(self._model)

    def __enter__(self) -> LlamaCppEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class LlamaGeneration:
    """Iterate for text as it is decoded; `stats`, `tokens` and `text` fill in as it runs."""

    def __init__(
        self,
        engine: LlamaCppEngine,
        prompt: list[int],
        max_tokens: int,
        sampling: Sampling,
        stop: tuple[str, ...],
        cancel: threading.Event | None,
    ):
        self._engine = engine
        self._prompt = prompt
        self._max_tokens = max_tokens
        self._sampling = sampling
        self._stop = tuple(s for s in stop if s)
        self._cancel = cancel
        self.stats = GenerationStats(prompt_tokens=len(prompt))
        self.tokens: list[int] = []
        self._pieces: list[str] = []
        self._iter: Iterator[str] | None = None

    @property
    def text(self) -> str:
        return "".join(self._pieces)

    def __iter__(self) -> Iterator[str]:
        if self._iter is None:
            self._iter = self._run()
        return self._iter

    def result(self) -> str:
        """Run to completion and return the whole text."""
        for _ in self:
            pass
        return self.text

    def _finish(self, reason: FinishReason, t0: float) -> None:
        self.stats.finish_reason = reason
        self.stats.total_s = time.perf_counter() - t0

    def _run(self) -> Iterator[str]:
        eng = self._engine
        rng = np.random.default_rng(self._sampling.seed)
        decoder = codecs.getincrementaldecoder("utf-8")("replace")
        with eng._lock:
            t0 = time.perf_counter()
            try:
                yield from self._steps(eng, rng, decoder, t0)
            finally:
                if self.stats.finish_reason is None:  # the consumer stopped iterating early
                    self._finish("cancelled", t0)

    def _steps(
        self, eng: LlamaCppEngine, rng: np.random.Generator, decoder: codecs.IncrementalDecoder, t0: float
    ) -> Iterator[str]:
        held = ""  # text that might be the start of a stop string
        if self._cancel is not None and self._cancel.is_set():
            self._finish("cancelled", t0)
            return
        self.stats.cached_tokens = eng._prefill(self._prompt)
        self.stats.prefill_s = time.perf_counter() - t0
        pos = len(self._prompt)
        t_first = 0.0
        reason: FinishReason = "length"
        while len(self.tokens) < self._max_tokens:
            token = sample_token(eng._logits(), self._sampling, rng)
            if not self.tokens:
                t_first = time.perf_counter()
                self.stats.first_token_s = t_first - t0
            if eng.is_eog(token):
                reason = "eos"
                break
            self.tokens.append(token)
            self.stats.completion_tokens = len(self.tokens)
            held += decoder.decode(eng.token_bytes(token))
            out, held, hit = _split_stop(held, self._stop)
            if out:
                self._pieces.append(out)
                yield out
            if hit:
                reason = "stop"
                break
            if self._cancel is not None and self._cancel.is_set():
                reason = "cancelled"
                break
            if pos + 1 >= eng.context_size:
                reason = "context_full"
                break
            if len(self.tokens) >= self._max_tokens:
                break
            eng._decode([token], pos)
            pos += 1
        if reason != "stop":
            held += decoder.decode(b"", final=True)
            if held:
                self._pieces.append(held)
                yield held
        if t_first:
            self.stats.decode_s = time.perf_counter() - t_first
        self._finish(reason, t0)


def _split_stop(text: str, stops: tuple[str, ...]) -> tuple[str, str, bool]:
    """(text safe to emit, text held back, whether a stop string was hit)."""
    if not stops:
        return text, "", False
    first = min((i for i in (text.find(s) for s in stops) if i >= 0), default=-1)
    if first >= 0:
        return text[:first], "", True
    keep = 0
    for s in stops:
        for n in range(min(len(s) - 1, len(text)), 0, -1):
            if text.endswith(s[:n]):
                keep = max(keep, n)
                break
    return text[: len(text) - keep], text[len(text) - keep :], False
