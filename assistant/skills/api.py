"""The public plugin API: what a skill declares, and what its handlers receive and return.

A skill package exposes a `Skill` object through the `assistant.skills` entry-point group:

    [project.entry-points."assistant.skills"]
    weather = "my_weather:skill"
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

from assistant.skills.capabilities import LLM, HomeControl
from assistant.skills.slots import Slot

Permission = Literal["llm", "home.control", "timers", "network", "subprocess"]
PERMISSIONS: dict[str, str] = {
    "llm": "generate text with the shared LLM (and the skill's adapter)",
    "home.control": "send commands to the integrator's home devices",
    "timers": "schedule announcements that fire later",
    "network": "open network connections",
    "subprocess": "start other programs",
}


class SkillError(Exception):
    """A skill that cannot be loaded or a declaration that is wrong; the message names the skill."""


class PermissionDenied(Exception):
    """A skill used a capability it did not declare."""


class NothingToDo(Exception):
    """Raised by a handler that finds nothing it can use in the utterance (no numbers for a sum).

    When the LLM classifier chose the intent, the turn goes to the chat fallback instead (the
    guess was wrong: "how many bones are in the body" is not a sum); after a template match the
    message is spoken, so it should say how to ask.
    """


class Generation(BaseModel):
    """Per-skill LLM settings; unset fields use the engine's."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_tokens: int | None = Field(None, ge=1, le=4096)
    temperature: float | None = Field(None, ge=0, le=2)
    max_sentences: int = Field(2, ge=0, le=20, description="Spoken replies stop after this many (0: no limit).")


class Reply(BaseModel):
    """What a handler returns (a plain `str` is shorthand for `Reply(text=...)`).

    `expect` keeps the microphone open for an answer without the wake word; the answer goes
    to `expect.handler`, or fills `expect.slot` of the same intent and re-runs it.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    text: str
    data: dict[str, Any] = Field(default_factory=dict, description="Structured result, e.g. a device command.")
    expect: FollowUp | None = None


@dataclass
class FollowUp:
    question: str
    slot: str | None = None  # the slot of the current intent the answer fills
    handler: Handler | None = None  # or a handler that receives the answer as ctx.utterance
    parse: Slot | None = None  # for `handler`: parse the answer as this slot type into ctx.slots["answer"]


class Context(Protocol):
    """What a handler receives. Capabilities check the skill's declared permissions."""

    utterance: str
    intent: str
    slots: dict[str, Any]
    settings: Any
    state: dict[str, Any]
    now: dt.datetime

    @property
    def llm(self) -> LLM: ...

    @property
    def home(self) -> HomeControl: ...

    def schedule(self, delay_s: float, announcement: str, *, key: str | None = None) -> str: ...

    def cancel_scheduled(self, key: str) -> bool: ...

    def scheduled(self) -> list[tuple[str, float, str]]: ...

    def say(self, text: str) -> None: ...

    def ask(self, question: str, *, slot: str | None = None, then: Handler | None = None,
            parse: Slot | None = None) -> Reply: ...  # fmt: skip


HandlerResult = Reply | str
Handler = Callable[[Context], HandlerResult] | Callable[[Context], Awaitable[HandlerResult]]


@dataclass
class Intent:
    """One thing a skill can do. `templates` are matched deterministically; `examples` only teach
    the LLM classifier paraphrases. A `fallback` intent receives whatever nothing else claims."""

    name: str
    handler: Handler
    templates: list[str] = field(default_factory=list)
    slots: dict[str, Slot] = field(default_factory=dict)
    examples: list[str] = field(default_factory=list)
    description: str = ""
    fallback: bool = False
    query: bool = False  # only reads state ("is the light on"): questions may reach it in a skill that acts


@dataclass
class Skill:
    """A skill declaration. Register intents with the `intent` decorator."""

    name: str
    description: str = ""
    permissions: list[str] = field(default_factory=list)
    adapter: str | None = None  # name of an [adapters.NAME] entry; used if configured
    system_prompt: str | None = None
    generation: Generation = field(default_factory=Generation)
    settings: type[BaseModel] | None = None  # validates [skills.settings.NAME]
    timeout_s: float | None = None  # overrides skills.timeout_s
    version: str = "0"
    intents: list[Intent] = field(default_factory=list)

    def intent(
        self,
        name: str,
        *,
        templates: list[str] | None = None,
        slots: Mapping[str, Slot] | None = None,
        examples: list[str] | None = None,
        description: str = "",
        fallback: bool = False,
        query: bool = False,
    ) -> Callable[[Handler], Handler]:
        def register(handler: Handler) -> Handler:
            self.intents.append(
                Intent(
                    name=name,
                    handler=handler,
                    templates=list(templates or []),
                    slots=dict(slots or {}),
                    examples=list(examples or []),
                    description=description or (handler.__doc__ or "").strip().split("\n")[0],
                    fallback=fallback,
                    query=query,
                )
            )
            return handler

        return register

    def check(self) -> None:
        """Declaration errors a developer should see at load, not at the first request."""
        if not self.name.isidentifier():
            raise SkillError(f"skill name {self.name!r} must be an identifier (letters, digits, _)")
        unknown = sorted(set(self.permissions) - set(PERMISSIONS))
        if unknown:
            raise SkillError(
                f"skill '{self.name}' declares unknown permission(s) {', '.join(unknown)}; "
                f"known: {', '.join(PERMISSIONS)}"
            )
        seen: set[str] = set()
        for it in self.intents:
            if not it.name.isidentifier():
                raise SkillError(f"skill '{self.name}': intent name {it.name!r} must be an identifier")
            if it.name in seen:
                raise SkillError(f"skill '{self.name}' declares intent '{it.name}' twice")
            seen.add(it.name)
            if not (it.templates or it.examples or it.fallback):
                raise SkillError(
                    f"intent '{self.name}.{it.name}' has no templates, no examples and is not a fallback: "
                    "nothing can ever route to it"
                )
            for slot_name, slot in it.slots.items():
                if slot.required and not slot.prompt:
                    raise SkillError(
                        f"slot '{slot_name}' of '{self.name}.{it.name}' is required but has no prompt to ask for it"
                    )


Reply.model_rebuild()
