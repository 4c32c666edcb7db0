"""The router: templates first, then the LLM classifier, then the chat fallback; every decision
carries its stage, score and a reason a person can read (`assistant route TEXT`)."""

from __future__ import annotations

import datetime as dt
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from pydantic import BaseModel, Field

from assistant.router.templates import Template, TemplateError, compile_template
from assistant.skills.api import Intent
from assistant.skills.slots import Slot, Text
from assistant.text import COURTESY, normalize

Stage = Literal["template", "follow_up", "classifier", "fallback"]


class Route(BaseModel):
    """Where an utterance goes, and why."""

    stage: Stage
    intent: str | None = Field(description="'skill.intent', or None when no skill takes it.")
    slots: dict[str, Any] = Field(default_factory=dict)
    missing: list[str] = Field(default_factory=list, description="Required slots the utterance left out.")
    score: float = 0.0
    reason: str
    template: str | None = None
    elapsed_us: float = 0.0

    @property
    def skill(self) -> str | None:
        return self.intent.split(".", 1)[0] if self.intent else None

    @property
    def intent_name(self) -> str | None:
        return self.intent.split(".", 1)[1] if self.intent else None


@dataclass
class Conflict:
    """A sentence that templates of two different skills both accept."""

    sentence: str
    first: str
    second: str
    winner: str

    def __str__(self) -> str:
        return f"'{self.sentence}' is claimed by {self.first} and {self.second} (routes to {self.winner})"


class Classifier(Protocol):
    def classify(self, text: str, normalized: str) -> tuple[str | None, float, str]:
        """(intent or None for the chat fallback, confidence, reason)."""
        ...

    def warm(self) -> None:
        """Do now what the first call would otherwise pay for (prefill a fixed prompt)."""
        ...


class Router:
    """Compiled once at start from the loaded skills' intents."""

    def __init__(self, intents: Sequence[tuple[str, Intent]], classifier: Classifier | None = None):
        self.intents = {f"{skill}.{it.name}": it for skill, it in intents}
        self.templates: list[Template] = []
        for skill, it in intents:
            for source in it.templates:
                try:
                    self.templates.append(
                        compile_template(source, intent=f"{skill}.{it.name}", skill=skill, slots=it.slots)
                    )
                except TemplateError as exc:
                    raise TemplateError(f"skill '{skill}': {exc}") from None
        fallbacks = [name for name, it in self.intents.items() if it.fallback]
        self.fallback = fallbacks[0] if fallbacks else None
        self.problems: list[str] = []
        if len(fallbacks) > 1:
            self.problems.append(f"several fallback intents ({', '.join(fallbacks)}); using {self.fallback}")
        self.classifier = classifier
        self.conflicts = self._conflicts()
        self.problems += [f"template conflict: {c}" for c in self.conflicts]

    # --- deterministic stage ------------------------------------------------

    def match(self, text: str, now: dt.datetime | None = None) -> Route | None:
        return self._match(normalize(text), now or dt.datetime.now(), time.perf_counter())

    def _match(self, normalized: str, now: dt.datetime, t0: float) -> Route | None:
        best = self._best(normalized, now)
        if best is None:
            polite = _COURTESY.sub("", normalized)
            best = self._best(polite, now) if polite != normalized and polite else None
        if best is None:
            return None
        score, tpl, values = best
        return Route(
            stage="template",
            intent=tpl.intent,
            slots=values,
            missing=self.missing(tpl.intent, values),
            score=round(score, 3),
            reason=f"template '{tpl.source}' matched the whole utterance",
            template=tpl.source,
            elapsed_us=(time.perf_counter() - t0) * 1e6,
        )

    def _best(self, normalized: str, now: dt.datetime) -> tuple[float, Template, dict[str, Any]] | None:
        best: tuple[float, Template, dict[str, Any]] | None = None
        for tpl in self.templates:
            hit = tpl.match(normalized, now)
            if hit is not None and (best is None or hit[0] > best[0]):
                best = (hit[0], tpl, hit[1])
        return best

    def missing(self, intent: str, values: dict[str, Any]) -> list[str]:
        """Required slots of the intent that `values` lacks."""
        return [n for n, s in self.intents[intent].slots.items() if s.required and n not in values]

    # --- full routing -------------------------------------------------------

    def route(self, text: str, *, now: dt.datetime | None = None, classify: bool = True) -> Route:
        t0 = time.perf_counter()
        now = now or dt.datetime.now()
        normalized = normalize(text)
        hit = self._match(normalized, now, t0)
        if hit is not None:
            return hit
        if classify and self.classifier is not None and normalized:
            intent, confidence, why = self.classifier.classify(text, normalized)
            if intent is not None and intent in self.intents:
                values = extract_slots(self.intents[intent].slots, normalized, now)
                return Route(
                    stage="classifier",
                    intent=intent,
                    slots=values,
                    missing=self.missing(intent, values),
                    score=round(confidence, 3),
                    reason=f"no template matched; {why}",
                    elapsed_us=(time.perf_counter() - t0) * 1e6,
                )
            reason = f"no template matched; {why}"
        else:
            reason = "no template matched" + ("" if classify else " (classifier off)")
        return Route(
            stage="fallback",
            intent=self.fallback,
            reason=reason + ("; the chat fallback answers" if self.fallback else "; no fallback skill installed"),
            elapsed_us=(time.perf_counter() - t0) * 1e6,
        )

    def fill(self, intent: str, slot: str, text: str, now: dt.datetime | None = None) -> Any | None:
        """Parse a follow-up answer as one slot of an intent ("five minutes" after "For how long?")."""
        return parse_answer(self.intents[intent].slots[slot], text, now or dt.datetime.now())

    # --- load-time checks and ASR support --------------------------------------

    def _conflicts(self) -> list[Conflict]:
        found: dict[tuple[str, str], Conflict] = {}
        now = dt.datetime(2026, 1, 5, 12, 0)
        for tpl in self.templates:
            for sentence in tpl.expansions(16):
                claims = [(hit[0], other) for other in self.templates if (hit := other.match(sentence, now))]
                skills = {other.skill for _, other in claims}
                if len(skills) < 2:
                    continue
                claims.sort(key=lambda c: -c[0])
                winner = claims[0][1]
                for _, other in claims:
                    if other.skill != tpl.skill:
                        pair = tuple(sorted((tpl.intent, other.intent)))
                        found.setdefault(pair, Conflict(sentence, tpl.intent, other.intent, winner.intent))  # type: ignore[arg-type]
        return list(found.values())

    def phrases(self, per_template: int = 32) -> list[str]:
        """Sentences the templates accept (samples for slots), for an ASR grammar or language model."""
        out: dict[str, None] = {}
        for tpl in self.templates:
            for s in tpl.expansions(per_template):
                out[s] = None
        for it in self.intents.values():
            for ex in it.examples:
                out[normalize(ex)] = None
        return list(out)

    def vocabulary(self) -> set[str]:
        """Every word a command can contain: template words and the words of typed slots."""
        words: set[str] = set()
        for tpl in self.templates:
            words |= tpl.literal_words()
            for slot in tpl.slots.values():
                words |= slot.vocabulary()
        return words


# Politeness around a command does not change it: "could you set a timer please".
_COURTESY = re.compile(rf"{COURTESY}| please$")
_FILLER = re.compile(r"^(?:(?:uh|um|well|ok|okay|so|for|in|at|to|about|it's|its|make it|let's say|say|the|on)\s+)+")


def parse_answer(slot: Slot, text: str, now: dt.datetime) -> Any | None:
    normalized = normalize(text)
    candidates = [normalized, _FILLER.sub("", normalized)]
    for c in candidates:
        if c and (isinstance(slot, Text) or re.fullmatch(slot.pattern, c)):
            value = slot.parse(c, now)
            if value is not None:
                return value
    return None


def extract_slots(slots: dict[str, Slot], normalized: str, now: dt.datetime) -> dict[str, Any]:
    """Typed slots found anywhere in an utterance the classifier routed (free text cannot be found)."""
    values: dict[str, Any] = {}
    for name, slot in slots.items():
        if isinstance(slot, Text):
            continue
        for m in re.finditer(rf"(?:^|(?<= ))(?:{slot.pattern})(?= |$)", normalized):
            value = slot.parse(m.group(0), now)
            if value is not None:
                values[name] = value
                break
    return values


__all__ = ["Classifier", "Conflict", "Route", "Router", "TemplateError", "extract_slots", "normalize", "parse_answer"]
