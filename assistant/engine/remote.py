"""A home server's OpenAI-compatible API as the engine (`engine.backend = "openai"`).

For a device that has outgrown its own model: llama.cpp's server or vLLM on a machine at home answers,
a skill's adapter becoming the request's model (vLLM serves each LoRA as a model). The device's own
engine stays loaded and answers whenever the server cannot: unreachable, refusing, too slow, or dying
mid-answer (it then continues the words already said, so nothing is repeated or lost). Every such turn
says why in `GenerationStats.fallback`, which the pipeline adds to the route reason. After a failure the
server rests for `retry_after_s`, so no request waits for a dead server's timeout.
"""

from __future__ import annotations

import contextvars
import logging
import os
import queue
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import openai
from openai.types.chat import ChatCompletionMessageParam

from assistant.config.schema import RemoteConfig
from assistant.engine.types import (
    ChatMessage,
    Engine,
    EngineError,
    FinishReason,
    Generation,
    GenerationStats,
    Sampling,
    StreamedText,
)

log = logging.getLogger("assistant.engine.remote")
API_KEY_ENV = "ASSISTANT_REMOTE_API_KEY"
_POLL_S = 0.02  # how often a waiting request looks at its cancel event


class RemoteFailure(Exception):
    """The server could not answer this request; the message says why, for the route reason. `rest`: the
    server itself is in trouble (unreachable, too slow, 5xx, refusing our key), so it rests for a while."""

    def __init__(self, why: str, *, rest: bool = True):
        super().__init__(why)
        self.rest = rest


class _NotServed(Exception):  # noqa: N818 (not an error: a reason to answer locally)
    """The server is fine but does not serve this request's model (an adapter it lacks)."""


class RemoteEngine:
    """The `Engine` protocol over an OpenAI-compatible server, with the local engine behind it."""

    def __init__(self, cfg: RemoteConfig, local: Engine):
        self.cfg = cfg
        self.local = local
        secret = cfg.api_key.get_secret_value() if cfg.api_key is not None else os.environ.get(API_KEY_ENV, "")
        connect = cfg.connect_timeout_s
        self._client = openai.OpenAI(
            base_url=cfg.url,
            api_key=secret or "none",  # the client insists on one; servers without keys ignore it
            max_retries=0,  # a retry is the local engine's answer, not a second wait
            timeout=openai.Timeout(connect=connect, read=cfg.read_timeout_s, write=connect, pool=connect),
        )
        self._lock = threading.Lock()
        self._served: list[str] | None = None  # the server's model names, asked once per recovery
        self._down_until = 0.0
        self._down_why = ""

    # --- the protocol: text handling and adapters are the local engine's ---------------------------------

    @property
    def model_name(self) -> str:
        return f"{self.cfg.model or 'server default'} at {self.cfg.url} (local: {self.local.model_name})"

    @property
    def base_model(self) -> str:
        return self.local.base_model

    @property
    def context_size(self) -> int:
        return self.local.context_size  # prompts must fit the fallback too

    @property
    def adapters(self) -> list[str]:
        return self.local.adapters  # every adapter is loaded locally, for the fallback

    def set_threads(self, threads: int, threads_batch: int) -> None:
        self.local.set_threads(threads, threads_batch)

    def tokenize(self, text: str, *, special: bool = False) -> list[int]:
        return self.local.tokenize(text, special=special)

    def detokenize(self, tokens: Sequence[int]) -> str:
        return self.local.detokenize(tokens)

    def apply_chat_template(self, messages: Sequence[ChatMessage], *, add_generation_prompt: bool = True) -> str:
        return self.local.apply_chat_template(messages, add_generation_prompt=add_generation_prompt)

    def reset(self) -> None:
        self.local.reset()

    def close(self) -> None:
        self._client.close()
        self.local.close()

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
    ) -> Generation:
        if adapter is not None and adapter not in self.adapters:
            raise EngineError(f"unknown adapter '{adapter}' (loaded: {', '.join(self.adapters) or 'none'})")
        request = _Request(prompt, max_tokens, sampling or Sampling(), tuple(s for s in stop if s), cancel, adapter,
                           grammar, reply_start)  # fmt: skip
        return RemoteGeneration(self, request)

    # --- the server --------------------------------------------------------------------------------------

    def unavailable(self, req: _Request) -> str | None:
        """Why this request goes straight to the local engine (None: ask the server)."""
        if req.reply_start:
            return "a reply is being continued"
        if req.grammar is not None and self.cfg.grammar_field == "local":
            return "grammar-constrained requests run locally (engine.remote.grammar_field)"
        with self._lock:
            left = self._down_until - time.monotonic()
            if left > 0:
                return f"the home server at {self.cfg.url} failed {self._down_why}; it is retried in {left:.0f} s"
        return None

    def model_for(self, req: _Request) -> str:
        """The server's model for this request. Asks for the server's list once per recovery (outside the lock:
        concurrent first requests may each ask); raises what the client raises, `_NotServed` if it lacks the
        model. Called on the reading thread: the network is the framework's, never a skill's permission."""
        served = self._served
        if served is None:
            served = [m.id for m in self._client.models.list()]
            with self._lock:
                self._served = served
        name = self.cfg.adapter_models.get(req.adapter, req.adapter) if req.adapter else self.cfg.model
        name = name or (served[0] if served else "")
        if name not in served:
            raise _NotServed(f"the home server does not serve '{name}' (it lists {', '.join(served) or 'nothing'})")
        return name

    def failed(self, failure: RemoteFailure) -> None:
        if not failure.rest:
            return  # this request's problem (a prompt the server's context cannot hold), not the server's
        with self._lock:
            self._down_until = time.monotonic() + self.cfg.retry_after_s
            self._down_why = f"({failure})"
            self._served = None  # asked again when it is back: it may serve other models
        log.warning("home server %s failed (%s): the local engine answers for %.0f s", self.cfg.url, failure,
                    self.cfg.retry_after_s)  # fmt: skip

    def open_stream(self, req: _Request, model: str) -> openai.Stream[Any]:
        s = req.sampling
        # Not in OpenAI's API, taken by llama.cpp's servers and vLLM: the local engine's sampling exactly (no
        # repetition penalty, no min-p: llama-cpp-python's server defaults to 1.1 and 0.05).
        extra: dict[str, Any] = {"repeat_penalty": 1.0, "repetition_penalty": 1.0, "min_p": 0.0}
        if s.top_k > 0:
            extra["top_k"] = s.top_k  # 0 is "all" here; some servers refuse it
        if req.grammar is not None:
            extra[self.cfg.grammar_field] = req.grammar
        stop = list(req.stop) or None
        if isinstance(req.prompt, str):
            return self._client.completions.create(
                model=model, prompt=req.prompt, max_tokens=req.max_tokens, temperature=s.temperature, top_p=s.top_p,
                seed=s.seed, stop=stop, stream=True, extra_body=extra,
            )  # fmt: skip
        messages: list[ChatCompletionMessageParam] = [
            {"role": "system", "content": m.content} if m.role == "system"
            else {"role": "assistant", "content": m.content} if m.role == "assistant"
            else {"role": "user", "content": m.content}
            for m in req.prompt
        ]  # fmt: skip
        return self._client.chat.completions.create(
            model=model, messages=messages, max_tokens=req.max_tokens, temperature=s.temperature, top_p=s.top_p,
            seed=s.seed, stop=stop, stream=True, extra_body=extra,
        )  # fmt: skip


@dataclass(frozen=True)
class _Request:
    prompt: str | Sequence[ChatMessage]
    max_tokens: int
    sampling: Sampling
    stop: tuple[str, ...]
    cancel: threading.Event | None
    adapter: str | None
    grammar: str | None
    reply_start: str


class RemoteGeneration(StreamedText):
    """One request: the server's stream, or the local engine's answer (or its end) when the server fails."""

    def __init__(self, engine: RemoteEngine, request: _Request):
        self._engine = engine
        self._req = request
        self.stats = GenerationStats()
        self.tokens: list[int] = []  # the local engine's, if it answered; a server sends text
        super().__init__()

    def _run(self) -> Iterator[str]:
        t0 = time.perf_counter()
        why = self._engine.unavailable(self._req)
        if why is None:
            try:
                yield from self._remote(t0)
                return
            except RemoteFailure as exc:
                self._engine.failed(exc)
                said = "the home server failed mid-answer" if self._pieces else "the home server failed"
                why = f"{said} ({exc})"
            except _NotServed as exc:
                why = str(exc)
        yield from self._local(why, t0)

    def _remote(self, t0: float) -> Iterator[str]:
        """Pieces of the server's answer; RemoteFailure if it cannot give the whole of it. A grammar-constrained
        answer (short, never spoken) is held back until complete, so a failure leaves nothing half-said."""
        req, stats = self._req, self.stats
        events: queue.Queue[tuple[str, Any]] = queue.Queue()
        done = threading.Event()
        box: dict[str, openai.Stream[Any]] = {}

        def read() -> None:
            try:
                model = self._engine.model_for(req)
                if done.is_set():
                    return  # cancelled or timed out meanwhile: no request at all
                with self._engine.open_stream(req, model) as stream:
                    box["stream"] = stream
                    for chunk in stream:
                        if done.is_set():
                            return
                        for choice in chunk.choices[:1]:
                            delta = getattr(choice, "delta", None)  # chat chunks carry a delta, completions text
                            piece = (delta.content if delta is not None else choice.text) or ""
                            if piece:
                                events.put(("text", piece))
                            if choice.finish_reason:
                                events.put(("end", choice.finish_reason))
                events.put(("closed", None))
            except _NotServed as exc:
                events.put(("not served", exc))
            except Exception as exc:  # anything the connection or the server does ends this request, here
                events.put(("error", exc))

        # A fresh context: the framework's permissions, whichever skill's handler thread asked (see sandbox).
        reader = threading.Thread(target=contextvars.Context().run, args=(read,), name="remote-engine", daemon=True)
        reader.start()
        held: list[str] = []
        deadline = t0 + self._engine.cfg.first_token_timeout_s
        try:
            while True:
                if req.cancel is not None and req.cancel.is_set():
                    yield from self._keep(held)
                    self._finish("cancelled", t0)
                    return
                try:
                    kind, value = events.get(timeout=_POLL_S)
                except queue.Empty:
                    if not held and not self._pieces and time.perf_counter() > deadline:
                        raise RemoteFailure(f"no answer within {self._engine.cfg.first_token_timeout_s:g} s") from None
                    continue
                if kind == "text":
                    if not held and not self._pieces:
                        stats.first_token_s = stats.prefill_s = time.perf_counter() - t0
                    if req.grammar is not None:
                        held.append(value)
                    else:
                        yield from self._keep([value])
                elif kind == "end":
                    yield from self._keep(held)
                    self._finish("length" if value == "length" else "eos", t0)
                    return
                elif kind == "closed":
                    raise RemoteFailure("the answer ended without a finish reason")
                elif kind == "not served":
                    raise value
                else:
                    raise _failure(value)
        except RemoteFailure:
            if not self._pieces:
                stats.first_token_s = stats.prefill_s = 0.0  # a held answer is dropped: the local engine starts over
            raise
        finally:
            done.set()
            stream = box.get("stream")
            if stream is not None:
                stream.close()  # the server stops generating when it next writes (barge-in, timeouts)

    def _keep(self, pieces: list[str]) -> Iterator[str]:
        for piece in pieces:
            self._pieces.append(piece)
            yield piece

    def _local(self, why: str, t0: float) -> Iterator[str]:
        """The local engine's answer, continuing whatever the server already said."""
        req, stats, local = self._req, self.stats, self._engine.local
        stats.fallback = f"{why}: the local engine {'finished' if self._pieces else 'answered'}"
        log.info("%s", stats.fallback)
        said = len(local.tokenize(self.text)) if self._pieces else 0
        if req.max_tokens - said <= 0:
            self._finish("length", t0)
            return
        gen = local.generate(req.prompt, max_tokens=req.max_tokens - said, sampling=req.sampling, stop=req.stop,
                             cancel=req.cancel, adapter=req.adapter, grammar=req.grammar,
                             reply_start=req.reply_start + self.text)  # fmt: skip
        stats.behind = gen.stats  # its wait for the engine is not the caller's own time
        first = not self._pieces
        for piece in gen:
            if first:
                stats.first_token_s = stats.prefill_s = time.perf_counter() - t0
                first = False
            self._pieces.append(piece)
            yield piece
        stats.behind = None
        self.tokens = list(gen.tokens)
        stats.prompt_tokens, stats.cached_tokens = gen.stats.prompt_tokens, gen.stats.cached_tokens
        stats.queued_s += gen.stats.queued_s
        self._finish(gen.stats.finish_reason or "eos", t0)

    def _finish(self, reason: FinishReason, t0: float) -> None:
        stats = self.stats
        stats.finish_reason = reason
        stats.total_s = time.perf_counter() - t0
        # A server sends text, several tokens to a piece at times: counted in the local vocabulary.
        stats.completion_tokens = len(self._engine.local.tokenize(self.text)) if self._pieces else 0
        if stats.completion_tokens:
            stats.decode_s = stats.total_s - stats.first_token_s


def _failure(exc: BaseException) -> RemoteFailure:
    """A server failure in words, with the fix where the cause is on our side; whether the server should rest."""
    if isinstance(exc, openai.AuthenticationError):
        return RemoteFailure(f"it refused the API key (HTTP {exc.status_code}): set engine.remote.api_key or "
                             f"${API_KEY_ENV}")  # fmt: skip
    if isinstance(exc, openai.NotFoundError):
        return RemoteFailure(f"HTTP 404 ({exc.message}): check engine.remote.url and engine.remote.model")
    if isinstance(exc, openai.APIStatusError):
        # 4xx other than these is about this request (a prompt too long for the server's context): no rest.
        return RemoteFailure(f"HTTP {exc.status_code}: {exc.message}", rest=exc.status_code >= 500)
    if isinstance(exc, openai.APITimeoutError):
        return RemoteFailure("it timed out")
    if isinstance(exc, openai.APIConnectionError):
        cause = exc.__cause__
        return RemoteFailure(f"unreachable: {cause}" if cause else "unreachable")
    return RemoteFailure(f"{type(exc).__name__}: {exc}")
