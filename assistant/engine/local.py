"""What every in-process backend shares: prompts, KV prefix reuse, the streaming decode loop.

A backend (llama.cpp, compiled TVM) supplies a vocabulary and a handful of KV-cache primitives
(`_decode`, `logits`, `truncate`, `_seq_clear`, `_seq_copy`); everything a caller sees
(stop strings, cancellation, UTF-8, stats, prefix slots, grammar) is written once, here.
"""

from __future__ import annotations

import codecs
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

import numpy as np

from assistant.engine.lora import AdapterError
from assistant.engine.prefix_store import MIN_TOKENS, PrefixStore
from assistant.engine.sampling import sample_token
from assistant.engine.types import (
    ChatMessage,
    EngineError,
    FinishReason,
    GenerationStats,
    Sampling,
    StreamedText,
)
from assistant.engine.vocab import Vocab, chat_tokens

WORK_SEQ = 0  # the sequence every request decodes in; others hold cached prefixes


@dataclass
class PrefixSlot:
    """A cached prompt prefix (e.g. a skill's system prompt) kept in its own KV sequence."""

    seq: int
    adapter: str | None = None
    tokens: list[int] = field(default_factory=list)  # the prefix, then maybe a parked conversation
    fixed: int = 0  # how many of `tokens` are the prefix this slot keeps
    last_used: float = 0.0


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


TokenSource = Callable[[Request, np.random.Generator], Generator[int, None, None]]


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


class LocalEngine(ABC):
    """An engine running the model in this process, one request at a time (requests take `_lock`)."""

    vocab: Vocab
    context_size: int
    threads: tuple[int, int]  # (decode, batch) as last set
    batch_size: int
    # Why a verify batch may not give bit-identical logits to one-token decodes (None: it should),
    # and whether the difference is large enough to change greedy output in practice.
    batch_variance: str | None = None
    batch_variance_matters: bool = False

    def _init_state(self, name: str, prefix_slots: int) -> None:
        self._name = name
        self._lock = threading.RLock()
        self._closed = False
        self._cached: list[int] = []  # tokens whose KV state sits in WORK_SEQ
        self._cached_adapter: str | None = None  # adapter that was active when they were evaluated
        self._slots = [PrefixSlot(seq=i + 1) for i in range(prefix_slots)]
        self.prefix_store: PrefixStore | None = None  # long base-model prefixes kept on disk (load_engine sets it)

    # --- what a backend provides -----------------------------------------------

    @abstractmethod
    def _decode(self, tokens: Sequence[int], start_pos: int, *, all_logits: bool = False) -> None:
        """Evaluate tokens at consecutive positions of WORK_SEQ (start_pos == len(self._cached))."""

    @abstractmethod
    def logits(self, index: int = -1) -> np.ndarray:
        """Logits of the last evaluated batch (index -1: its last output row)."""

    @abstractmethod
    def set_threads(self, threads: int, threads_batch: int) -> None:
        """Threads for decoding and for batches (prefill, verify), changed between requests."""

    @abstractmethod
    def truncate(self, n: int) -> None:
        """Keep only the first n tokens of WORK_SEQ (rollback after rejected draft tokens)."""

    @abstractmethod
    def _seq_clear(self, seq: int) -> None:
        """Drop a sequence's KV state."""

    @abstractmethod
    def _seq_copy(self, src: int, dst: int, n: int) -> None:
        """Make the empty sequence `dst` hold the first n tokens of `src` (sharing, not copying, where possible)."""

    @abstractmethod
    def load_adapter(self, name: str, path: Path, scale: float = 1.0) -> None:
        """Make a GGUF LoRA resident; requests then pick it by name with no reload."""

    @abstractmethod
    def use_adapter(self, name: str | None) -> None: ...

    @property
    @abstractmethod
    def adapters(self) -> list[str]: ...

    @abstractmethod
    def _reset_kv(self) -> None: ...

    @abstractmethod
    def _seq_state(self, seq: int) -> bytes | None:
        """A sequence's KV state as bytes (None: this backend cannot). Asked only of WORK_SEQ right after
        a decode: a copy into another sequence may not have happened yet (llama.cpp defers them)."""

    @abstractmethod
    def _set_seq_state(self, seq: int, state: bytes) -> bool:
        """Load `_seq_state`'s bytes into the empty sequence `seq`; False if that failed."""

    @abstractmethod
    def _release(self) -> None:
        """Free the backend's resources (called once, under the lock)."""

    # --- text <-> tokens -------------------------------------------------------

    @property
    def model_name(self) -> str:
        return self._name

    @property
    def base_model(self) -> str:
        return self._name

    @property
    def n_vocab(self) -> int:
        return self.vocab.n_tokens

    def tokenize(self, text: str, *, special: bool = False) -> list[int]:
        """`special` parses control tokens such as <|im_start|> and adds BOS if the model wants one."""
        return self.vocab.tokenize(text, special=special)

    def token_bytes(self, token: int) -> bytes:
        return self.vocab.token_bytes(token)

    def token_text(self, token: int) -> bytes:
        """The vocabulary entry itself (special tokens included), for comparing vocabularies."""
        return self.vocab.token_text(token)

    def detokenize(self, tokens: Sequence[int]) -> str:
        return b"".join(self.vocab.token_bytes(t) for t in tokens).decode("utf-8", "replace")

    def is_eog(self, token: int) -> bool:
        return self.vocab.is_eog(token)

    def apply_chat_template(self, messages: Sequence[ChatMessage], *, add_generation_prompt: bool = True) -> str:
        return self.vocab.apply_chat_template(messages, add_generation_prompt=add_generation_prompt)

    # --- KV state ----------------------------------------------------------------

    def _require_adapter(self, name: str | None) -> None:
        if name is not None and name not in self.adapters:
            known = ", ".join(sorted(self.adapters)) or "none are loaded"
            raise AdapterError(f"unknown adapter '{name}' (loaded: {known})")

    def _drop_work_seq(self) -> None:
        self._seq_clear(WORK_SEQ)
        self._cached = []

    def _forget_adapter_state(self, name: str) -> None:
        """KV state computed under an adapter that was replaced is stale."""
        if self._cached_adapter == name:
            self._drop_work_seq()
        for slot in self._slots:
            if slot.adapter == name and slot.tokens:
                self._seq_clear(slot.seq)
                slot.tokens = []

    def prefill(self, tokens: list[int], *, adapter: str | None = None, cache_prefix: int = 0) -> int:
        """Bring WORK_SEQ to `tokens` under `adapter`, reusing cached KV state. Returns tokens reused.

        The source is WORK_SEQ itself (same conversation) or a prefix slot (a skill's system
        prompt seen before), whichever shares more tokens; KV state made under another adapter
        is never reused. If `cache_prefix` > 0 the first that many tokens are kept in a slot.
        """
        self.use_adapter(adapter)
        best, source = 0, None
        if self._cached_adapter == adapter:
            best = common_prefix(self._cached, tokens)
        for slot in self._slots:
            if slot.adapter == adapter and slot.tokens:
                n = common_prefix(slot.tokens, tokens)
                if n > best:
                    best, source = n, slot
        prefix = tokens[:cache_prefix]
        store = self.prefix_store if adapter is None and len(prefix) >= MIN_TOKENS else None  # long, adapter-free
        if store is not None and best < cache_prefix:
            loaded = self._load_prefix(store, prefix)
            if loaded is not None:
                best, source = cache_prefix, loaded
        best = min(best, len(tokens) - 1)  # the last prompt token is evaluated again for its logits
        if source is None:
            if self._cached_adapter != adapter:
                self._drop_work_seq()
            self.truncate(best)
        else:
            self._drop_work_seq()
            self._seq_copy(source.seq, WORK_SEQ, best)
            self._cached = source.tokens[:best]
            source.last_used = time.monotonic()
        self._cached_adapter = adapter
        start = best
        if store is not None and start < cache_prefix < len(tokens) and not store.holds(prefix):
            # The prefix alone first, so that the file holds its state and nothing of the user's text.
            self._decode(tokens[start:cache_prefix], start)
            if (state := self._seq_state(WORK_SEQ)) is not None:
                store.save(prefix, state)
            start = cache_prefix
        self._decode(tokens[start:], start)
        if cache_prefix > 0:
            self._remember_prefix(prefix, adapter)
        return best

    def _slot_holding(self, prefix: list[int], adapter: str | None) -> PrefixSlot | None:
        """The slot kept for exactly this prefix (its tokens may go on with a parked conversation)."""
        for slot in self._slots:
            if slot.adapter == adapter and slot.fixed == len(prefix) and slot.tokens[: slot.fixed] == prefix:
                return slot
        return None

    def _remember_prefix(self, prefix: list[int], adapter: str | None) -> None:
        if not self._slots:
            return
        slot = self._slot_holding(prefix, adapter)
        if slot is not None:
            slot.last_used = time.monotonic()
            return
        slot = self._free_slot()
        self._seq_copy(WORK_SEQ, slot.seq, len(prefix))
        slot.tokens, slot.fixed, slot.adapter, slot.last_used = list(prefix), len(prefix), adapter, time.monotonic()

    def park(self, prefix: list[int], adapter: str | None) -> None:
        """Keep the whole working sequence (prompt and reply) in the slot of its fixed prefix.

        The next turn of the conversation starts with it: its history is then reused, not evaluated
        again after a request with another prompt (the router's classifier) took the working sequence.
        """
        if self._closed:  # a generation collected after `close`: nothing is left to keep
            return
        slot = self._slot_holding(prefix, adapter) if self._cached_adapter == adapter else None
        if slot is None or slot.tokens == self._cached or self._cached[: len(prefix)] != prefix:
            return
        self._seq_clear(slot.seq)
        self._seq_copy(WORK_SEQ, slot.seq, len(self._cached))
        slot.tokens, slot.last_used = list(self._cached), time.monotonic()

    def _free_slot(self) -> PrefixSlot:
        """The least recently used slot (empty ones first), emptied."""
        slot = min(self._slots, key=lambda s: s.last_used)
        self._seq_clear(slot.seq)
        slot.tokens = []
        return slot

    def _load_prefix(self, store: PrefixStore, prefix: list[int]) -> PrefixSlot | None:
        """A slot holding `prefix` from the disk store, if it has it (adapter-free state only)."""
        state = store.load(prefix)
        if state is None or not self._slots:
            return None
        slot = self._free_slot()
        if not self._set_seq_state(slot.seq, state):
            self._seq_clear(slot.seq)
            return None
        slot.tokens, slot.fixed, slot.adapter, slot.last_used = list(prefix), len(prefix), None, time.monotonic()
        return slot

    def reset(self) -> None:
        """Drop all cached KV state (working sequence and prefix slots)."""
        with self._lock:
            self._reset_kv()
            self._cached = []
            for slot in self._slots:
                slot.tokens, slot.adapter = [], None

    # --- generation --------------------------------------------------------------

    def chat_tokens(self, messages: Sequence[ChatMessage], *, add_generation_prompt: bool = True) -> list[int]:
        """Tokens of a chat: the template's markup with control tokens, message text never (see `vocab`)."""
        return chat_tokens(self.vocab, messages, add_generation_prompt=add_generation_prompt)

    def prompt_tokens(self, prompt: str | Sequence[ChatMessage]) -> tuple[list[int], int]:
        """Tokens of the request, and how many of them are its fixed part (worth caching): the system
        message and the `fixed` messages that follow it."""
        if isinstance(prompt, str):
            return self.tokenize(prompt, special=True), 0
        tokens = self.chat_tokens(prompt)
        n = 0
        while n < len(prompt) - 1 and (prompt[n].role == "system" if n == 0 else prompt[n].fixed):
            n += 1
        prefix = 0
        if n:
            head = self.chat_tokens(prompt[:n], add_generation_prompt=False)
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
        reply_start: str = "",
    ) -> TextGeneration:
        return self._start(
            prompt, max_tokens, sampling, stop, cancel, adapter, self._plain_tokens, grammar, reply_start
        )

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
        reply_start: str = "",
    ) -> TextGeneration:
        if self._closed:
            raise EngineError("engine is closed")
        self._require_adapter(adapter)
        tokens, prefix = self.prompt_tokens(prompt)
        if reply_start:
            tokens = tokens + self.tokenize(reply_start)  # text, never control tokens
        if not tokens:
            raise EngineError("empty prompt")
        if len(tokens) >= self.context_size:
            raise EngineError(
                f"prompt is {len(tokens)} tokens but the context holds {self.context_size}: "
                "shorten the conversation or raise engine.context_size"
            )
        if grammar is not None:
            self.vocab.grammar(grammar).close()  # a bad grammar fails here, not mid-request
            source = self._plain_tokens  # constrained output is short and structured: no speculation
        request = Request(
            tokens, prefix, max_tokens, sampling or Sampling(), tuple(s for s in stop if s), cancel, adapter, grammar
        )
        return TextGeneration(self, request, source)

    def _plain_tokens(self, req: Request, rng: np.random.Generator) -> Generator[int, None, None]:
        """One target decode per token. The token is yielded before it is evaluated, so a
        consumer that stops early leaves the KV cache exactly at what it accepted."""
        pos = len(req.tokens)
        grammar = self.vocab.grammar(req.grammar) if req.grammar is not None else None
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
            if not self._closed:
                self._closed = True
                self._release()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class TextGeneration(StreamedText):
    """Iterate for text as it is decoded; `stats`, `tokens` and `text` fill in as it runs.

    The token source decides how tokens are produced (plain or speculative decoding);
    this class owns everything else: prefill, stop strings, cancellation, UTF-8, stats.
    """

    def __init__(self, engine: LocalEngine, request: Request, source: TokenSource):
        self._engine = engine
        self.request = request
        self._source = source
        self.stats = GenerationStats(prompt_tokens=len(request.tokens))
        self.tokens: list[int] = []
        super().__init__()

    def _finish(self, reason: FinishReason, t0: float) -> None:
        self.stats.finish_reason = reason
        self.stats.total_s = time.perf_counter() - t0

    def _run(self) -> Iterator[str]:
        self.stats.queued_since = t_wait = time.perf_counter()
        with self._engine._lock:
            t0 = time.perf_counter()
            self.stats.queued_s, self.stats.queued_since = t0 - t_wait, None
            try:
                yield from self._steps(t0)
            finally:
                if self.stats.finish_reason is None:  # the consumer stopped iterating early
                    self._finish("cancelled", t0)
                if self.request.cache_prefix:
                    self._engine.park(self.request.tokens[: self.request.cache_prefix], self.request.adapter)

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
                out, held, hit = split_stop(held, req.stop)
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


def split_stop(text: str, stops: tuple[str, ...]) -> tuple[str, str, bool]:
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
