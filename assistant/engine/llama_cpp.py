"""llama.cpp backend through llama-cpp-python's low-level C API.

The high-level `Llama` class fixes one LoRA per instance and disables mmap with
adapters; the low-level API lets us share one model across skills, switch adapters
per request, and drive the KV cache ourselves (prefix slots, speculative rollback).
"""

from __future__ import annotations

import codecs
import collections
import ctypes
import logging
import threading
import time
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import llama_cpp as ll
import numpy as np

from assistant.engine.lora import AdapterError, check_base, read_adapter_manifest
from assistant.engine.sampling import sample_token
from assistant.engine.types import ChatMessage, EngineError, FinishReason, GenerationStats, Sampling

log = logging.getLogger("assistant.engine.llama_cpp")

_recent_errors: collections.deque[str] = collections.deque(maxlen=8)
_backend_lock = threading.Lock()
_backend_ready = False
_last_level = [2]  # GGML_LOG_LEVEL_CONT (5) continues the previous message at its level
WORK_SEQ = 0  # the sequence every request decodes in; others hold cached prefixes


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


def quantize_model(source: Path, target: Path, ftype: str, threads: int = 0) -> None:
    """Re-quantize a GGUF with llama.cpp's own quantizer (deterministic for a given version)."""
    _init_backend()
    params = ll.llama_model_quantize_default_params()
    params.ftype = getattr(ll, _FTYPES[ftype])
    params.allow_requantize = True
    params.nthread = threads
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


@dataclass
class _PrefixSlot:
    """A cached prompt prefix (e.g. a skill's system prompt) kept in its own KV sequence."""

    seq: int
    adapter: str | None = None
    tokens: list[int] = field(default_factory=list)
    last_used: float = 0.0


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


class LlamaCppEngine:
    """One loaded GGUF model with one context; requests are serialized by a lock."""

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
        self._name = name or path.stem
        self.base_sha256 = base_sha256
        self._lock = threading.RLock()
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
            raise EngineError(f"cannot load model {path}: {_last_errors('unknown cause')}")
        self._model = model
        self._vocab = ll.llama_model_get_vocab(model)
        self.n_vocab = int(ll.llama_vocab_n_tokens(self._vocab))

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
        self._cached: list[int] = []  # tokens whose KV state sits in WORK_SEQ
        self._cached_adapter: str | None = None  # adapter that was active when they were evaluated
        self._slots = [_PrefixSlot(seq=i + 1) for i in range(prefix_slots)]
        self._template: bytes | None = ll.llama_model_chat_template(model, None)
        self._adapters: dict[str, _Adapter] = {}
        self._active_adapter: str | None = None
        self.adapter_switches = 0

    # --- properties ----------------------------------------------------------

    @property
    def model_name(self) -> str:
        return self._name

    @property
    def adapters(self) -> list[str]:
        return list(self._adapters)

    def set_threads(self, threads: int, threads_batch: int) -> None:
        """Change thread counts between requests (cheap); the voice loop lowers them while the ASR is busy."""
        ll.llama_set_n_threads(self._ctx, threads, threads_batch)
        self.threads = (threads, threads_batch)

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

    def token_text(self, token: int) -> bytes:
        """The vocabulary entry itself (special tokens included), for comparing vocabularies."""
        raw = ll.llama_vocab_get_text(self._vocab, token)
        return bytes(raw) if raw is not None else b""

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

    def _forget_adapter_state(self, name: str) -> None:
        if self._cached_adapter == name:
            self._drop_work_seq()
        for slot in self._slots:
            if slot.adapter == name and slot.tokens:
                ll.llama_memory_seq_rm(self._mem, slot.seq, 0, -1)
                slot.tokens = []

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

    def _require_adapter(self, name: str | None) -> None:
        if name is not None and name not in self._adapters:
            known = ", ".join(sorted(self._adapters)) or "none are loaded"
            raise AdapterError(f"unknown adapter '{name}' (loaded: {known})")

    def use_adapter(self, name: str | None) -> None:
        self._require_adapter(name)
        with self._lock:
            self._apply_adapter(name)

    # --- evaluation ----------------------------------------------------------

    def _decode(self, tokens: Sequence[int], start_pos: int, *, all_logits: bool = False) -> None:
        """Evaluate tokens at consecutive positions of WORK_SEQ, in batch-size chunks."""
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
        """Logits of the last evaluated batch (index -1: its last output row)."""
        ptr = ll.llama_get_logits_ith(self._ctx, index)
        return np.ctypeslib.as_array(ptr, shape=(self.n_vocab,))

    def truncate(self, n: int) -> None:
        """Keep only the first n tokens of WORK_SEQ (rollback after rejected draft tokens)."""
        if n < len(self._cached):
            if not ll.llama_memory_seq_rm(self._mem, WORK_SEQ, n, -1):
                self._drop_work_seq()
                return
            del self._cached[n:]

    def _drop_work_seq(self) -> None:
        ll.llama_memory_seq_rm(self._mem, WORK_SEQ, 0, -1)
        self._cached = []

    def prefill(self, tokens: list[int], *, adapter: str | None = None, cache_prefix: int = 0) -> int:
        """Bring WORK_SEQ to `tokens` under `adapter`, reusing cached KV state. Returns tokens reused.

        The source is WORK_SEQ itself (same conversation) or a prefix slot (a skill's system
        prompt seen before), whichever shares more tokens; KV state made under another adapter
        is never reused. If `cache_prefix` > 0 the first that many tokens are kept in a slot.
        """
        self.use_adapter(adapter)
        best, source = 0, None
        if self._cached_adapter == adapter:
            best = _common_prefix(self._cached, tokens)
        for slot in self._slots:
            if slot.adapter == adapter and slot.tokens:
                n = _common_prefix(slot.tokens, tokens)
                if n > best:
                    best, source = n, slot
        best = min(best, len(tokens) - 1)  # the last prompt token is evaluated again for its logits
        if source is None:
            if self._cached_adapter != adapter:
                self._drop_work_seq()
            self.truncate(best)
        else:
            self._drop_work_seq()
            ll.llama_memory_seq_cp(self._mem, source.seq, WORK_SEQ, 0, best)
            self._cached = source.tokens[:best]
            source.last_used = time.monotonic()
        self._cached_adapter = adapter
        self._decode(tokens[best:], best)
        if cache_prefix > 0:
            self._remember_prefix(tokens[:cache_prefix], adapter)
        return best

    def _remember_prefix(self, prefix: list[int], adapter: str | None) -> None:
        if not self._slots:
            return
        for slot in self._slots:
            if slot.adapter == adapter and slot.tokens == prefix:
                slot.last_used = time.monotonic()
                return
        slot = min(self._slots, key=lambda s: s.last_used)  # least recently used (empty slots first)
        ll.llama_memory_seq_rm(self._mem, slot.seq, 0, -1)
        ll.llama_memory_seq_cp(self._mem, WORK_SEQ, slot.seq, 0, len(prefix))
        slot.tokens, slot.adapter, slot.last_used = list(prefix), adapter, time.monotonic()

    def reset(self) -> None:
        """Drop all cached KV state (working sequence and prefix slots)."""
        with self._lock:
            ll.llama_memory_clear(self._mem, True)
            self._cached = []
            for slot in self._slots:
                slot.tokens, slot.adapter = [], None

    # --- generation ----------------------------------------------------------

    def prompt_tokens(self, prompt: str | Sequence[ChatMessage]) -> tuple[list[int], int]:
        """Tokens of the request, and how many of them are its system prompt (worth caching)."""
        if isinstance(prompt, str):
            return self.tokenize(prompt, special=True), 0
        tokens = self.tokenize(self.apply_chat_template(prompt), special=True)
        prefix = 0
        if prompt and prompt[0].role == "system" and len(prompt) > 1:
            head = self.tokenize(self.apply_chat_template(prompt[:1], add_generation_prompt=False), special=True)
            if tokens[: len(head)] == head:
                prefix = len(head)
        return tokens, prefix

    def generate(
        self,
        prompt: str | Sequence[ChatMessage],
        *,
        max_tokens: int = 128,
        sampling: Sampling | None = None,
        stop: Sequence[str] = (),
        cancel: threading.Event | None = None,
        adapter: str | None = None,
        grammar: str | None = None,
    ) -> LlamaGeneration:
        return self._start(prompt, max_tokens, sampling, stop, cancel, adapter, self._plain_tokens, grammar)

    def _start(
        self,
        prompt: str | Sequence[ChatMessage],
        max_tokens: int,
        sampling: Sampling | None,
        stop: Sequence[str],
        cancel: threading.Event | None,
        adapter: str | None,
        source: TokenSource,
        grammar: str | None = None,
    ) -> LlamaGeneration:
        if self._closed:
            raise EngineError("engine is closed")
        self._require_adapter(adapter)
        tokens, prefix = self.prompt_tokens(prompt)
        if not tokens:
            raise EngineError("empty prompt")
        if len(tokens) >= self.context_size:
            raise EngineError(
                f"prompt is {len(tokens)} tokens but the context holds {self.context_size}: "
                "shorten the conversation or raise engine.context_size"
            )
        if grammar is not None:
            _Grammar(self._vocab, self.n_vocab, grammar).close()  # a bad grammar fails here, not mid-request
            source = self._plain_tokens  # constrained output is short and structured: no speculation
        request = Request(
            tokens, prefix, max_tokens, sampling or Sampling(), tuple(s for s in stop if s), cancel, adapter, grammar
        )
        return LlamaGeneration(self, request, source)

    def _plain_tokens(self, req: Request, rng: np.random.Generator) -> Generator[int, None, None]:
        """One target decode per token. The token is yielded before it is evaluated, so a
        consumer that stops early leaves the KV cache exactly at what it accepted."""
        pos = len(req.tokens)
        grammar = _Grammar(self._vocab, self.n_vocab, req.grammar) if req.grammar is not None else None
        try:
            while True:
                logits = self.logits() if grammar is None else grammar.mask(self.logits())
                token = sample_token(logits, req.sampling, rng)
                if grammar is not None:
                    grammar.accept(token)
                yield token
                if pos + 1 >= self.context_size:
                    return
                self._decode([token], pos)
                pos += 1
        finally:
            if grammar is not None:
                grammar.close()

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            for adapter in self._adapters.values():
                ll.llama_adapter_lora_free(adapter.handle)
            ll.llama_batch_free(self._batch)
            ll.llama_free(self._ctx)
            ll.llama_model_free(self._model)

    def __enter__(self) -> LlamaCppEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass(frozen=True)
class Request:
    tokens: list[int]
    cache_prefix: int
    max_tokens: int
    sampling: Sampling
    stop: tuple[str, ...]
    cancel: threading.Event | None
    adapter: str | None
    grammar: str | None = None


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


TokenSource = Callable[[Request, np.random.Generator], Generator[int, None, None]]


class LlamaGeneration:
    """Iterate for text as it is decoded; `stats`, `tokens` and `text` fill in as it runs.

    The token source decides how tokens are produced (plain or speculative decoding);
    this class owns everything else: prefill, stop strings, cancellation, UTF-8, stats.
    """

    def __init__(self, engine: LlamaCppEngine, request: Request, source: TokenSource):
        self._engine = engine
        self.request = request
        self._source = source
        self.stats = GenerationStats(prompt_tokens=len(request.tokens))
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
        with self._engine._lock:
            t0 = time.perf_counter()
            try:
                yield from self._steps(t0)
            finally:
                if self.stats.finish_reason is None:  # the consumer stopped iterating early
                    self._finish("cancelled", t0)

    def _steps(self, t0: float) -> Iterator[str]:
        eng, req = self._engine, self.request
        if req.cancel is not None and req.cancel.is_set():
            self._finish("cancelled", t0)
            return
        self.stats.cached_tokens = eng.prefill(req.tokens, adapter=req.adapter, cache_prefix=req.cache_prefix)
        self.stats.prefill_s = time.perf_counter() - t0
        rng = np.random.default_rng(req.sampling.seed)
        decoder = codecs.getincrementaldecoder("utf-8")("replace")
        held = ""  # text that might be the start of a stop string
        t_first = 0.0
        reason: FinishReason = "context_full"
        source = self._source(req, rng)
        try:
            for token in source:
                if not t_first:
                    t_first = time.perf_counter()
                    self.stats.first_token_s = t_first - t0
                if eng.is_eog(token):
                    reason = "eos"
                    break
                self.tokens.append(token)
                self.stats.completion_tokens = len(self.tokens)
                held += decoder.decode(eng.token_bytes(token))
                out, held, hit = _split_stop(held, req.stop)
                if out:
                    self._pieces.append(out)
                    yield out
                if hit:
                    reason = "stop"
                    break
                if req.cancel is not None and req.cancel.is_set():
                    reason = "cancelled"
                    break
                if len(self.tokens) >= req.max_tokens:
                    reason = "length"
                    break
        finally:
            source.close()  # stop a speculative burst where the consumer stopped
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
