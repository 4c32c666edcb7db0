"""The turn pipeline shared by `assistant ask`, `assistant chat` and the voice loop.

text -> route -> handler (today: the LLM chat fallback) -> spoken-style reply, with a
timing for each stage. The router and skills plug in at `_route` without callers changing.
"""

from __future__ import annotations

import re
import threading
import time
import unicodedata
from collections.abc import Callable

from pydantic import BaseModel, Field

from assistant.config.schema import AssistantConfig
from assistant.engine import ChatMessage, Engine, GenerationStats, load_engine, sampling_from_config
from assistant.modelstore import ModelStore, Reporter

# Markdown the small model sometimes emits; none of it can be spoken.
_UNSPEAKABLE = re.compile(r"[*#`_~|>]+")
# The same 1-8 characters six or more times in a row at the end of the output.
_REPEAT = re.compile(r"(.{1,8}?)\1{5,}$", re.DOTALL)
_LIST_MARKER = re.compile(r"(\d{1,2}[.)]|[-*+•])")
FALLBACK_REPLY = "Sorry, I don't have a good answer to that."


class RouteDecision(BaseModel):
    handler: str = Field(description="Who answers: a skill intent, or 'chat' for the LLM fallback.")
    reason: str
    score: float = 1.0


class TurnResult(BaseModel):
    text: str
    route: RouteDecision
    timings_ms: dict[str, float]
    stats: GenerationStats | None = None

    def timing_line(self) -> str:
        parts = [f"{k} {v:.0f} ms" for k, v in self.timings_ms.items()]
        if self.stats is not None and self.stats.completion_tokens:
            parts.append(f"{self.stats.completion_tokens} tokens")
            if self.stats.decode_tok_s:
                parts.append(f"{self.stats.decode_tok_s:.0f} tok/s")
            if self.stats.cached_tokens:
                parts.append(f"{self.stats.cached_tokens}/{self.stats.prompt_tokens} prompt tokens cached")
        return " | ".join(parts)


def _speakable(ch: str) -> bool:
    # Emoji, dingbats and modifier symbols cannot be spoken; currency and math signs can.
    cat = unicodedata.category(ch)
    return not (cat in ("So", "Sk", "Cf", "Co", "Cn", "Cs") or ch in "\ufe0f\u200d")


class SpokenStream:
    """Streaming cleanup for speech: no markdown, list markers or emoji; one line; a sentence limit; no loops.

    Works on whole words, so at most one partial word is held back until the next piece.
    """

    def __init__(self, max_sentences: int):
        self.max_sentences = max_sentences
        self.text = ""
        self.degenerate = False
        self._raw = ""
        self._pending = ""
        self._line_start = True
        self._sentences = 0

    def feed(self, piece: str) -> str:
        self._raw = (self._raw + piece)[-96:]
        if _REPEAT.search(self._raw):
            self.degenerate = True  # the small model is stuck repeating itself
        self._pending += piece
        cut = max(self._pending.rfind(c) for c in " \n\t")
        if cut < 0:
            return ""
        ready, self._pending = self._pending[: cut + 1], self._pending[cut + 1 :]
        return self._emit(ready)

    def finish(self) -> str:
        rest, self._pending = self._pending, ""
        return self._emit(rest)

    @property
    def full(self) -> bool:
        return self.max_sentences > 0 and self._sentences >= self.max_sentences

    def _emit(self, chunk: str) -> str:
        out = ""
        for token in re.split(r"(\s+)", chunk):
            if not token:
                continue
            if self.full:
                break  # anything after the last allowed sentence is never spoken
            if token.isspace():
                if "\n" in token:
                    self._line_start = True
                if self.text or out:
                    out += " "
                continue
            if self._line_start and _LIST_MARKER.fullmatch(token):
                continue
            self._line_start = False
            word = "".join(ch for ch in _UNSPEAKABLE.sub("", token) if _speakable(ch))
            out += word
            if word.rstrip("\"')”’").endswith((".", "!", "?")):
                self._sentences += 1
        out = re.sub(r" {2,}", " ", out)
        if self.text.endswith(" ") or not self.text:
            out = out.lstrip(" ")
        if self.full:
            out = out.rstrip(" ")
        self.text += out
        return out

    @property
    def done(self) -> bool:
        return self.degenerate or self.full


class Session:
    """Multi-turn context of one conversation."""

    def __init__(self, max_turns: int = 6):
        self.max_turns = max_turns
        self.history: list[ChatMessage] = []

    def add(self, user: str, assistant: str) -> None:
        self.history += [ChatMessage(role="user", content=user), ChatMessage(role="assistant", content=assistant)]
        del self.history[: max(0, len(self.history) - 2 * self.max_turns)]


class Assistant:
    """One loaded assistant: config, the shared engine, and the turn pipeline."""

    def __init__(self, cfg: AssistantConfig, engine: Engine, *, max_sentences: int = 2):
        self.cfg = cfg
        self.engine = engine
        self.max_sentences = max_sentences
        self._sampling = sampling_from_config(cfg)

    @classmethod
    def load(cls, cfg: AssistantConfig, store: ModelStore | None = None, reporter: Reporter | None = None) -> Assistant:
        return cls(cfg, load_engine(cfg, store, reporter))

    def _route(self, text: str) -> RouteDecision:
        return RouteDecision(
            handler="chat", reason="no skills installed: every utterance goes to the LLM chat fallback"
        )

    def _messages(self, text: str, session: Session) -> list[ChatMessage]:
        system = ChatMessage(role="system", content=self.cfg.engine.system_prompt)
        user = ChatMessage(role="user", content=text)
        history = list(session.history)
        budget = self.cfg.engine.context_size - self.cfg.engine.max_tokens
        # Drop the oldest exchanges until the prompt leaves room for the reply.
        while True:
            messages = [system, *history, user]
            n = len(self.engine.tokenize(self.engine.apply_chat_template(messages), special=True))
            if n <= budget or not history:
                return messages
            history = history[2:]

    def ask(
        self,
        text: str,
        session: Session | None = None,
        *,
        on_text: Callable[[str], None] | None = None,
        cancel: threading.Event | None = None,
        max_tokens: int | None = None,
    ) -> TurnResult:
        session = session if session is not None else Session()
        t0 = time.perf_counter()
        route = self._route(text)
        t_route = time.perf_counter()
        messages = self._messages(text, session)
        t_prompt = time.perf_counter()
        stop_event = threading.Event()
        spoken = SpokenStream(self.max_sentences)
        gen = self.engine.generate(
            messages,
            max_tokens=max_tokens or self.cfg.engine.max_tokens,
            sampling=self._sampling,
            cancel=stop_event,
        )
        t_first: float | None = None
        for piece in gen:
            out = spoken.feed(piece)
            if out and t_first is None:
                t_first = time.perf_counter()
            if out and on_text is not None:
                on_text(out)
            if spoken.done or (cancel is not None and cancel.is_set()):
                stop_event.set()
        tail = spoken.finish()
        if tail and on_text is not None:
            on_text(tail)
        t_end = time.perf_counter()
        reply = spoken.text.strip()
        if not any(ch.isalnum() for ch in reply):
            reply = FALLBACK_REPLY
            if on_text is not None:
                on_text(reply)
        session.add(text, reply)
        timings = {
            "route": (t_route - t0) * 1000,
            "first_token": (t_prompt - t_route + gen.stats.first_token_s) * 1000,
            "first_text": ((t_first or t_end) - t_route) * 1000,
            "generate": (t_end - t_route) * 1000,
            "total": (t_end - t0) * 1000,
        }
        return TurnResult(text=reply, route=route, timings_ms=timings, stats=gen.stats)

    def close(self) -> None:
        self.engine.close()
