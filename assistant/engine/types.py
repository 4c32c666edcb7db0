"""Messages and results exchanged with an engine, independent of the backend."""

from __future__ import annotations

import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from typing import Literal, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

Role = Literal["system", "user", "assistant"]
FinishReason = Literal["eos", "length", "stop", "cancelled", "context_full"]


class ChatMessage(BaseModel):
    model_config = ConfigDict(frozen=True)

    role: Role
    content: str
    fixed: bool = Field(
        False,
        description="Part of a fixed prompt prefix, like the system message (e.g. worked examples): the "
        "engine keeps its KV state cached across requests.",
    )


class Sampling(BaseModel):
    """temperature 0 means greedy; greedy output is deterministic and reproducible."""

    model_config = ConfigDict(frozen=True)

    temperature: float = Field(0.0, ge=0)
    top_k: int = Field(40, ge=0)
    top_p: float = Field(0.95, gt=0, le=1)
    seed: int = 0

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0


class GenerationStats(BaseModel):
    """Counts and timings of one request (seconds unless named otherwise)."""

    prompt_tokens: int = 0
    cached_tokens: int = Field(0, description="Prompt tokens whose KV state was reused, not recomputed.")
    completion_tokens: int = 0
    prefill_s: float = 0.0
    first_token_s: float = 0.0
    decode_s: float = 0.0
    total_s: float = 0.0
    queued_s: float = Field(0.0, description="Waiting for the engine, busy with another request, before starting.")
    queued_since: float | None = Field(None, exclude=True, description="perf_counter() while waiting, else None.")
    finish_reason: FinishReason | None = None
    fallback: str | None = Field(
        None, description="Why the local engine answered (or finished the answer) instead of the home server."
    )

    behind: GenerationStats | None = Field(
        None, exclude=True, description="The stats of the engine answering for this one (a fallback), while it does."
    )

    def waited_s(self) -> float:
        """Time spent waiting for the engine so far (while still waiting, up to now)."""
        waiting = time.perf_counter() - self.queued_since if self.queued_since is not None else 0.0
        return self.queued_s + waiting + (self.behind.waited_s() if self.behind is not None else 0.0)

    @property
    def decode_tok_s(self) -> float:
        # The first token comes out of the prefill; the rest are decode steps.
        steps = self.completion_tokens - 1
        return steps / self.decode_s if steps > 0 and self.decode_s > 0 else 0.0

    @property
    def prefill_tok_s(self) -> float:
        n = self.prompt_tokens - self.cached_tokens
        return n / self.prefill_s if n > 0 and self.prefill_s > 0 else 0.0


class EngineError(Exception):
    """An engine request or load that cannot proceed; the message says why and what to do."""


class Generation(Protocol):
    """A running request: iterate for text pieces as they are decoded."""

    stats: GenerationStats
    tokens: list[int]

    def __iter__(self) -> Iterator[str]: ...

    @property
    def text(self) -> str: ...

    def result(self) -> str: ...


class StreamedText(ABC):
    """What every generation shares: iterate once for the pieces `_run` yields; `text` is what came so far."""

    stats: GenerationStats
    tokens: list[int]

    def __init__(self) -> None:
        self._pieces: list[str] = []
        self._iter: Iterator[str] | None = None

    @abstractmethod
    def _run(self) -> Iterator[str]:
        """The pieces, each appended to `_pieces` before it is yielded."""

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


@runtime_checkable
class Engine(Protocol):
    """What callers need from an LLM backend (llama.cpp today, compiled TVM later)."""

    @property
    def model_name(self) -> str: ...

    @property
    def base_model(self) -> str:
        """Manifest name of the model that answers (the target when speculating)."""
        ...

    @property
    def context_size(self) -> int:
        """Tokens the context holds: prompts are trimmed to fit it."""
        ...

    @property
    def adapters(self) -> list[str]:
        """Names of the loaded LoRA adapters a request may pick."""
        ...

    def set_threads(self, threads: int, threads_batch: int) -> None:
        """Change CPU threads between requests: the voice loop yields cores while the ASR catches up."""
        ...

    def tokenize(self, text: str, *, special: bool = False) -> list[int]: ...

    def detokenize(self, tokens: Sequence[int]) -> str: ...

    def apply_chat_template(self, messages: Sequence[ChatMessage], *, add_generation_prompt: bool = True) -> str: ...

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
        """`reply_start`: words of the reply already said (by a server that died mid-answer): the model
        continues them, and the generation's text is only what follows."""
        ...

    def reset(self) -> None: ...

    def close(self) -> None: ...
