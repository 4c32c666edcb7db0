"""The LLM as skills see it (`ctx.llm`): spoken-style streaming chat, raw completion, and
JSON constrained by a grammar built from a pydantic model.

Requests use the skill's LoRA adapter and system prompt when the integrator configured the
adapter, so one shared base model serves every skill.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import unicodedata
from collections.abc import Callable, Sequence
from typing import TypeVar

from pydantic import BaseModel, ValidationError

from assistant.engine import ChatMessage, Engine, EngineError, GenerationStats, Sampling

log = logging.getLogger("assistant.skills.llm")
FALLBACK_REPLY = "Sorry, I don't have a good answer to that."
M = TypeVar("M", bound=BaseModel)

# Markdown the small model sometimes emits; none of it can be spoken.
_UNSPEAKABLE = re.compile(r"[*#`_~|>]+")
# The same 1-8 characters six or more times in a row at the end of the output.
_REPEAT = re.compile(r"(.{1,8}?)\1{5,}$", re.DOTALL)
_LIST_MARKER = re.compile(r"(\d{1,2}[.)]|[-*+•])")
_LOOP_WORDS = 4  # a phrase this long said again within a sentence is a loop, not style


def _speakable(ch: str) -> bool:
    # Emoji, dingbats and modifier symbols cannot be spoken; currency and math signs can.
    cat = unicodedata.category(ch)
    return not (cat in ("So", "Sk", "Cf", "Co", "Cn", "Cs") or ch in "\ufe0f\u200d")


class SpokenStream:
    """Streaming cleanup for speech: no markdown, list markers or emoji; one line; a sentence limit; no loops.

    Only whole sentences are released (the TTS speaks sentence by sentence anyway), so a reply that
    degenerates or runs out of tokens mid-sentence never speaks the broken part: `finish(complete=False)`
    drops it. A loop is a 4-word phrase said twice in one sentence or three times in the reply, or
    the same few characters six times in a row.
    """

    def __init__(self, max_sentences: int):
        self.max_sentences = max_sentences
        self.text = ""
        self.degenerate = False
        self.dropped = ""  # the unfinished or looping part that was not spoken
        self._raw = ""
        self._pending = ""
        self._sentence: list[str] = []  # cleaned words of the sentence in progress
        self._words: list[str] = []  # normalized words of the whole reply, for loop detection
        self._sentence_start = 0  # index in _words where the sentence in progress starts
        self._seen: dict[tuple[str, ...], list[int]] = {}  # 4-word phrase -> where it started
        self._line_start = True
        self._sentences = 0

    def feed(self, piece: str) -> str:
        if self.done:
            return ""
        self._raw = (self._raw + piece)[-96:]
        if _REPEAT.search(self._raw):
            self._degenerate()  # the small model is stuck repeating itself
            return ""
        self._pending += piece
        cut = max(self._pending.rfind(c) for c in " \n\t")
        if cut < 0:
            return ""
        ready, self._pending = self._pending[: cut + 1], self._pending[cut + 1 :]
        return self._emit(ready)

    def finish(self, *, complete: bool = True) -> str:
        """The rest of the reply; `complete=False` (cut by a token limit or a cancel) drops an unfinished sentence."""
        rest, self._pending = self._pending, ""
        out = self._emit(rest)
        if self._sentence and complete and not self.done:
            out += self._release()
        elif self._sentence:
            self.dropped = " ".join(self._sentence)
            self._sentence = []
        return out

    @property
    def full(self) -> bool:
        return self.max_sentences > 0 and self._sentences >= self.max_sentences

    @property
    def done(self) -> bool:
        return self.degenerate or self.full

    def _degenerate(self) -> None:
        self.degenerate = True
        self.dropped = " ".join(self._sentence)
        self._sentence = []

    def _emit(self, chunk: str) -> str:
        out = ""
        for token in re.split(r"(\s+)", chunk):
            if not token or self.done:
                continue  # anything after the last allowed sentence or a loop is never spoken
            if token.isspace():
                self._line_start = self._line_start or "\n" in token
                continue
            if self._line_start and _LIST_MARKER.fullmatch(token):
                continue
            self._line_start = False
            word = "".join(ch for ch in _UNSPEAKABLE.sub("", token) if _speakable(ch))
            if not word:
                continue
            self._sentence.append(word)
            if self._loops(word):
                self._degenerate()
                break
            if word.rstrip("\"')”’").endswith((".", "!", "?")):
                self._sentences += 1
                out += self._release()
        return out

    def _release(self) -> str:
        out = (" " if self.text else "") + " ".join(self._sentence)
        self._sentence = []
        self._sentence_start = len(self._words)
        self.text += out
        return out

    def _loops(self, word: str) -> bool:
        """True when the 4-word phrase ending at this word is said twice in a sentence or thrice in the reply."""
        self._words.append(re.sub(r"\W+", "", word.lower()))
        if len(self._words) < _LOOP_WORDS:
            return False
        start = len(self._words) - _LOOP_WORDS
        starts = self._seen.setdefault(tuple(self._words[start:]), [])
        starts.append(start)
        earlier = [s for s in starts[:-1] if s + _LOOP_WORDS <= start]  # not overlapping this one
        return len(earlier) >= 2 or any(s >= self._sentence_start for s in earlier)


def json_grammar(model: type[BaseModel]) -> str:
    """GBNF that only admits JSON of the model's schema (llama-cpp-python's schema converter)."""
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    return str(json_schema_to_gbnf(json.dumps(model.model_json_schema())))


class SkillLLM:
    """One skill's handle on the shared engine for one turn."""

    def __init__(
        self,
        engine: Engine,
        *,
        adapter: str | None,
        system_prompt: str,
        sampling: Sampling,
        max_tokens: int,
        max_sentences: int,
        history: Sequence[ChatMessage],
        emit: Callable[[str], None],
        cancel: threading.Event,
        context_size: int = 2048,
        stats: list[GenerationStats] | None = None,
    ):
        self.engine = engine
        self.context_size = context_size
        self.adapter = adapter
        self.system_prompt = system_prompt
        self.sampling = sampling
        self.max_tokens = max_tokens
        self.max_sentences = max_sentences
        self.history = list(history)
        self._emit = emit
        self._cancel = cancel
        self.stats: list[GenerationStats] = stats if stats is not None else []  # the turn's, when given

    def messages(self, text: str, *, system: str | None = None, history: bool = True) -> list[ChatMessage]:
        """System prompt, as much history as fits, and the user's text (its start, if even that is too long)."""
        head = ChatMessage(role="system", content=system or self.system_prompt)
        user = ChatMessage(role="user", content=text)
        past = list(self.history) if history else []
        budget = min(self.context_size, self.engine.context_size) - self.max_tokens
        while True:
            messages = [head, *past, user]
            n = len(self.engine.tokenize(self.engine.apply_chat_template(messages), special=True))
            if n <= budget:
                return messages
            if past:
                past = past[2:]  # the oldest exchange goes first
                continue
            keep = int(len(user.content) * budget / n * 0.9)
            if keep < 1:
                return messages  # the system prompt alone does not fit: the engine says so
            log.warning(
                "the user's text is %d tokens over the context: its first %d characters are answered", n - budget, keep
            )
            user = ChatMessage(role="user", content=user.content[:keep])

    def chat(self, text: str, *, system: str | None = None, history: bool = True, max_tokens: int | None = None) -> str:
        """Answer in spoken style, streaming each cleaned piece to the listener; returns what was said."""
        spoken = SpokenStream(self.max_sentences)
        stop = threading.Event()
        gen = self.engine.generate(
            self.messages(text, system=system, history=history),
            max_tokens=max_tokens or self.max_tokens,
            sampling=self.sampling,
            cancel=stop,
            adapter=self.adapter,
        )
        self.stats.append(gen.stats)  # now, so the host sees time spent queueing for the engine
        for piece in gen:
            out = spoken.feed(piece)
            if out:
                self._emit(out)
            if spoken.done or self._cancel.is_set():
                stop.set()
        # A natural end may lack a full stop ("Four"); a token limit or a cancel mid-sentence is unfinished.
        tail = spoken.finish(complete=gen.stats.finish_reason in ("eos", "stop") and not self._cancel.is_set())
        if spoken.dropped:
            log.info("not spoken (%s): %r", "loop" if spoken.degenerate else "unfinished", spoken.dropped)
        if tail:
            self._emit(tail)
        reply = spoken.text.strip()
        if not any(ch.isalnum() for ch in reply):
            self._emit(FALLBACK_REPLY)
            return FALLBACK_REPLY
        return reply

    def complete(
        self,
        prompt: str | Sequence[ChatMessage],
        *,
        max_tokens: int = 64,
        grammar: str | None = None,
        stop: Sequence[str] = (),
    ) -> str:
        """Raw text, not spoken and not streamed (e.g. for a translation the handler post-processes)."""
        gen = self.engine.generate(
            prompt,
            max_tokens=max_tokens,
            sampling=Sampling(),  # structured answers are greedy
            stop=stop,
            cancel=self._cancel,
            adapter=self.adapter,
            grammar=grammar,
        )
        self.stats.append(gen.stats)
        return gen.result()

    def json(self, prompt: str | Sequence[ChatMessage], model: type[M], *, max_tokens: int = 96) -> M:
        """An instance of `model`, generated under a grammar of its JSON schema and validated."""
        raw = self.complete(prompt, max_tokens=max_tokens, grammar=json_grammar(model))
        try:
            return model.model_validate_json(raw)
        except ValidationError as exc:
            problem = f"the model produced JSON that does not validate: {raw!r} ({exc.error_count()} errors)"
            raise EngineError(problem) from None
