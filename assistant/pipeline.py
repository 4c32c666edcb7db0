"""The turn pipeline shared by `assistant ask`, `assistant chat` and the voice loop.

text -> route (follow-up answer, templates, LLM classifier, chat fallback) -> the skill's
handler, isolated -> spoken-style reply, with a timing for each stage.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from pydantic import BaseModel, Field

from assistant.config.profiles import profile_of
from assistant.config.schema import AssistantConfig
from assistant.engine import ChatMessage, Engine, GenerationStats, load_engine, sampling_from_config
from assistant.modelstore import ModelStore, Reporter
from assistant.router import Route, Router, normalize, parse_answer
from assistant.router.classifier import LlmClassifier
from assistant.safety import Concern, clean_input, command_concern
from assistant.skillhost.llm import FALLBACK_REPLY, SpokenStream
from assistant.skillhost.runtime import SkillRuntime
from assistant.skills.api import FollowUp, Handler, Reply, Skill

log = logging.getLogger("assistant.pipeline")
NO_SKILL_REPLY = "Sorry, I can't help with that."
ROUTING_FAILED_REPLY = "Sorry, I couldn't make sense of that."
_UNCLEAR: dict[Concern, str] = {
    "negation": "Okay, I won't do that.",
    "question": "I can send commands to devices, but I can't check on them.",
    "injection": "I won't act on that.",
}
_CANCEL_WORDS = {"cancel", "never mind", "nevermind", "forget it", "nothing", "stop", "no thanks"}

__all__ = ["FALLBACK_REPLY", "Assistant", "Session", "SpokenStream", "TurnResult"]


@dataclass
class Pending:
    """A question a skill asked; the next utterance answers it without a wake word."""

    intent: str
    slots: dict[str, Any]
    follow: FollowUp
    asked_at: float = field(default_factory=time.monotonic)


class Session:
    """Multi-turn context of one conversation: history for the LLM, and an open question if any."""

    def __init__(self, max_turns: int = 6):
        self.max_turns = max_turns
        self.history: list[ChatMessage] = []
        self.pending: Pending | None = None

    def add(self, user: str, assistant: str) -> None:
        self.history += [ChatMessage(role="user", content=user), ChatMessage(role="assistant", content=assistant)]
        del self.history[: max(0, len(self.history) - 2 * self.max_turns)]

    @property
    def expecting_answer(self) -> bool:
        """True after a skill asked something: the voice loop listens without the wake word."""
        return self.pending is not None


class TurnResult(BaseModel):
    text: str
    route: Route
    timings_ms: dict[str, float]
    stats: GenerationStats | None = None
    data: dict[str, Any] = Field(default_factory=dict)
    follow_up: bool = Field(False, description="The assistant asked a question and expects an answer.")
    error: str | None = Field(None, description="timeout, error, permission or suspended when a skill failed.")

    def timing_line(self) -> str:
        parts = [f"{k} {v:.0f} ms" for k, v in self.timings_ms.items()]
        if self.stats is not None and self.stats.completion_tokens:
            parts.append(f"{self.stats.completion_tokens} tokens")
            if self.stats.decode_tok_s:
                parts.append(f"{self.stats.decode_tok_s:.0f} tok/s")
            if self.stats.cached_tokens:
                parts.append(f"{self.stats.cached_tokens}/{self.stats.prompt_tokens} prompt tokens cached")
        return " | ".join(parts)


class Handled(NamedTuple):
    """What handling a routed turn gave, before timings and the session are added."""

    reply: Reply
    streamed: str = ""  # what was streamed to the listener during the turn
    error: str | None = None  # as TurnResult.error
    stats: GenerationStats | None = None  # the turn's last LLM generation


class Assistant:
    """One loaded assistant: config, the shared engine, the skills and the router."""

    def __init__(
        self,
        cfg: AssistantConfig,
        engine: Engine | None,
        skills: Iterable[Skill] | None = None,
        *,
        runtime: SkillRuntime | None = None,
    ):
        self.cfg = cfg
        self.engine = engine
        self.runtime = runtime or SkillRuntime(cfg, engine, skills, sampling=sampling_from_config(cfg))
        intents = self.runtime.intents()
        self.router = Router(intents)
        if engine is not None and cfg.skills.classifier:
            name = cfg.skills.classifier_adapter
            adapter = name if name in cfg.adapters and name in engine.adapters else None  # configured and loaded
            decides = cfg.skills.classifier_decides
            if decides is None:
                profile = profile_of(engine.base_model)
                decides = adapter is not None or (profile is not None and profile.classifier_decides)
            self.router.classifier = LlmClassifier(
                engine,
                intents,
                self.router.templates,
                adapter=adapter,
                llm_decides=decides,
                timeout_s=cfg.skills.classifier_timeout_s,
            )
        for problem in self.router.problems:
            log.warning("%s", problem)

    @classmethod
    def load(cls, cfg: AssistantConfig, store: ModelStore | None = None, reporter: Reporter | None = None) -> Assistant:
        return cls(cfg, load_engine(cfg, store, reporter))

    def warm(self) -> list[str]:
        """Prefill the LLM skills' and the classifier's prompts now rather than on their first turn; returns
        the names of what was warmed."""
        warmed = self.runtime.warm()
        if self.router.classifier is not None:
            self.router.classifier.warm()
            warmed.append("classifier")
        return warmed

    @property
    def problems(self) -> list[str]:
        return [str(p) for p in self.runtime.problems] + self.router.problems

    def on_announcement(self, listener: Callable[[str, str], None]) -> None:
        """`listener(skill, text)` is called when a scheduled announcement (a timer) fires."""
        self.runtime.listeners.append(listener)

    def route(self, text: str, session: Session | None = None, *, now: dt.datetime | None = None) -> Route:
        """The routing decision alone (what `assistant route` prints); no handler runs."""
        route, _ = self._route(text, session or Session(), now or dt.datetime.now())
        return route

    def _route(self, text: str, session: Session, now: dt.datetime) -> tuple[Route, Handler | None]:
        pending, session.pending = session.pending, None
        if pending is not None:
            t0 = time.perf_counter()
            answer = self._answer(pending, text, now)
            if answer is not None:
                answer.elapsed_us = (time.perf_counter() - t0) * 1e6
                return answer, pending.follow.handler
        return self.router.route(text, now=now, classify=self.cfg.skills.classifier), None

    def _answer(self, pending: Pending, text: str, now: dt.datetime) -> Route | None:
        """The route for an answer to an open question, or None if the user changed the subject."""
        question = pending.follow.question
        if normalize(text) in _CANCEL_WORDS:
            return Route(stage="follow_up", intent=None, reason=f"'{text}' cancels the question '{question}'")
        slot = pending.follow.slot
        if slot is not None:
            value = self.router.fill(pending.intent, slot, text, now)
            if value is None:
                return None
            slots = {**pending.slots, slot: value}
            missing = self.router.missing(pending.intent, slots)
            return Route(
                stage="follow_up", intent=pending.intent, slots=slots, missing=missing, score=1.0,
                reason=f"answer to '{question}' filled slot '{slot}'",
            )  # fmt: skip
        slots = dict(pending.slots)
        if pending.follow.parse is not None:
            value = parse_answer(pending.follow.parse, text, now)
            if value is None:
                return None
            slots["answer"] = value
        return Route(
            stage="follow_up", intent=pending.intent, slots=slots, score=1.0,
            reason=f"answer to '{question}' goes to the skill that asked",
        )  # fmt: skip

    def ask(
        self,
        text: str,
        session: Session | None = None,
        *,
        on_text: Callable[[str], None] | None = None,
        cancel: threading.Event | None = None,
        now: dt.datetime | None = None,
    ) -> TurnResult:
        session = session if session is not None else Session()
        t0 = time.perf_counter()
        text, changed = clean_input(text)
        if changed:
            log.warning("input: %s", changed)
        try:
            route, handler = self._route(text, session, now or dt.datetime.now())
        except Exception as exc:  # routing runs skills' slot parsers and the LLM: a bad input must not end the loop
            log.error("routing %r failed: %s: %s", text[:80], type(exc).__name__, exc, exc_info=exc)
            route = Route(stage="fallback", intent=None, reason=f"routing failed ({type(exc).__name__}); apologized")
            handler = None
            failed: Handled | None = Handled(Reply(text=ROUTING_FAILED_REPLY), error="error")
        else:
            failed = None
        t_route = time.perf_counter()
        handled = failed or self._handle(route, handler, text, session, on_text, cancel, now)
        reply, stats = handled.reply, handled.stats
        if not handled.streamed and on_text is not None:
            on_text(reply.text)
        t_end = time.perf_counter()
        spoken = handled.streamed or reply.text
        if reply.expect is not None and route.intent is not None:
            session.pending = Pending(route.intent, dict(route.slots), reply.expect)
        session.add(text, spoken)
        timings = {"route": (t_route - t0) * 1000}
        if stats is not None:
            timings["first_token"] = (t_route - t0 + stats.first_token_s) * 1000
        timings["handle"] = (t_end - t_route) * 1000
        timings["total"] = (t_end - t0) * 1000
        return TurnResult(
            text=spoken, route=route, timings_ms=timings, stats=stats, data=reply.data,
            follow_up=session.pending is not None, error=handled.error,
        )  # fmt: skip

    def _handle(
        self,
        route: Route,
        handler: Handler | None,
        text: str,
        session: Session,
        on_text: Callable[[str], None] | None,
        cancel: threading.Event | None,
        now: dt.datetime | None,
    ) -> Handled:
        if route.intent is None:
            return Handled(Reply(text="Okay." if route.stage == "follow_up" else NO_SKILL_REPLY))
        skill, intent = route.intent.split(".", 1)
        acts = self._acts(skill) and not self.router.intents[route.intent].query
        concern = command_concern(text) if route.stage != "follow_up" and acts else None
        if concern is not None:
            kind, words = concern
            route.reason += f"; not a clear command ({kind}: '{words}'): nothing was sent"
            log.info("%s routed to %s but is not a clear command (%s: %r)", text[:80], route.intent, kind, words)
            return Handled(Reply(text=_UNCLEAR[kind]))
        if route.missing:
            slot = self.router.intents[route.intent].slots[route.missing[0]]
            question = slot.prompt or f"What {route.missing[0]}?"
            return Handled(Reply(text=question, expect=FollowUp(question=question, slot=route.missing[0])))
        run = self.runtime.run(
            skill,
            intent,
            handler or self.router.intents[route.intent].handler,
            utterance=text,
            slots=dict(route.slots),
            history=session.history,
            on_text=on_text,
            cancel=cancel,
            now=now,
            confirmed=route.stage in ("template", "follow_up"),  # the LLM's choices ask before sensitive actions
        )
        reply, output = run.reply, run.output
        fallback = self.router.fallback
        if run.nothing_to_do and route.stage == "classifier" and fallback is not None and route.intent != fallback:
            route.reason += f"; {route.intent} found nothing to do ('{reply.text}'): the chat fallback answers"
            log.info("%s: %s", text[:80], route.reason)
            route.stage, route.intent, route.slots, route.missing = "fallback", fallback, {}, []
            return self._handle(route, None, text, session, on_text, cancel, now)
        for stats in output.stats:
            if stats.fallback and stats.fallback not in route.reason:
                route.reason += f"; {stats.fallback}"
        streamed = output.text
        if streamed and reply.text and reply.text.strip() not in streamed:
            extra = " " + reply.text.strip()
            output.emit(extra)  # a handler that streamed and then returned more text
            streamed = output.text
        return Handled(reply, streamed, run.error, output.stats[-1] if output.stats else None)

    def _acts(self, skill: str) -> bool:
        """Whether the skill can change the world (devices): only clear commands may reach it."""
        loaded = self.runtime.skills.get(skill)
        return loaded is not None and "home.control" in loaded.granted

    def close(self) -> None:
        self.runtime.close()
        if self.engine is not None:
            self.engine.close()
