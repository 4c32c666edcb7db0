"""What a handler receives (`HandlerContext`, the host's `Context`) and the text it streams during a turn."""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol

from assistant.engine import ChatMessage, GenerationStats
from assistant.skillhost.home import Home, TurnHome
from assistant.skillhost.llm import SkillLLM
from assistant.skillhost.loader import LoadedSkill
from assistant.skillhost.sandbox import require
from assistant.skillhost.scheduler import Scheduler
from assistant.skills.api import FollowUp, Handler, Reply
from assistant.skills.slots import Slot

log = logging.getLogger("assistant.skills")


class Host(Protocol):
    """What a handler context needs from the runtime (`SkillRuntime`)."""

    @property
    def home(self) -> Home: ...

    @property
    def scheduler(self) -> Scheduler: ...

    @property
    def job_ids(self) -> Iterator[int]: ...

    def llm_for(
        self,
        loaded: LoadedSkill,
        history: Sequence[ChatMessage],
        emit: Callable[[str], None],
        cancel: threading.Event,
        *,
        stats: list[GenerationStats] | None = None,
    ) -> SkillLLM: ...


class TurnOutput:
    """Text a handler streams to the user during the turn (LLM replies, `ctx.say`)."""

    def __init__(self, on_text: Callable[[str], None] | None):
        self._on_text = on_text
        self.pieces: list[str] = []
        self.first_at: float | None = None
        self.stats: list[GenerationStats] = []  # the turn's generations, registered as they start
        self.closed = False

    def close(self) -> None:
        """The turn is over (its handler was abandoned): anything it still says is dropped, not leaked
        into the next turn."""
        self.closed = True

    def queued_s(self) -> float:
        """Time the turn's generations spent waiting for the shared engine (busy with other callers)."""
        return sum(s.waited_s() for s in self.stats)

    def emit(self, text: str) -> None:
        if not text:
            return
        if self.closed:
            log.info("dropped output of an abandoned handler: %r", text[:80])
            return
        if self.first_at is None:
            self.first_at = time.perf_counter()
        self.pieces.append(text)
        if self._on_text is not None:
            self._on_text(text)

    @property
    def text(self) -> str:
        return "".join(self.pieces).strip()


class HandlerContext:
    """The `Context` a handler receives."""

    def __init__(
        self,
        runtime: Host,
        loaded: LoadedSkill,
        intent: str,
        utterance: str,
        slots: dict[str, Any],
        history: Sequence[ChatMessage],
        output: TurnOutput,
        cancel: threading.Event,
        now: dt.datetime,
        *,
        confirmed: bool = False,
    ):
        self._runtime = runtime
        self.confirmed = confirmed  # the route was clear: sensitive home actions may run without asking
        self._loaded = loaded
        self.skill = loaded.skill.name
        self.intent = intent
        self.utterance = utterance
        self.slots = slots
        self.settings = loaded.settings
        self.state = loaded.state
        self.now = now
        self.history = list(history)
        self.cancel = cancel
        self._output = output
        self._llm: SkillLLM | None = None

    def _require(self, permission: str) -> None:
        require(self._loaded.granted, permission, self.skill)

    @property
    def llm(self) -> SkillLLM:
        self._require("llm")
        if self._llm is None:
            self._llm = self._runtime.llm_for(
                self._loaded, self.history, self._output.emit, self.cancel, stats=self._output.stats
            )
        return self._llm

    @property
    def home(self) -> TurnHome:
        self._require("home.control")
        return TurnHome(self._runtime.home, confirmed=self.confirmed)

    def schedule(self, delay_s: float, announcement: str, *, key: str | None = None) -> str:
        self._require("timers")
        key = key or f"job{next(self._runtime.job_ids)}"
        self._runtime.scheduler.add(self.skill, f"{self.skill}/{key}", delay_s, announcement)
        return key

    def cancel_scheduled(self, key: str) -> bool:
        self._require("timers")
        return self._runtime.scheduler.cancel(f"{self.skill}/{key}")

    def scheduled(self) -> list[tuple[str, float, str]]:
        """(key, seconds left, announcement) of this skill's pending announcements."""
        self._require("timers")
        return self._runtime.scheduler.pending(f"{self.skill}/")

    def say(self, text: str) -> None:
        self._output.emit(text if not self._output.pieces else " " + text)

    def ask(
        self, question: str, *, slot: str | None = None, then: Handler | None = None, parse: Slot | None = None
    ) -> Reply:
        return Reply(text=question, expect=FollowUp(question=question, slot=slot, handler=then, parse=parse))
