"""Phrase tests: utterance -> expected intent and slots, as data (like Home Assistant's intent tests).

Used by `assistant skill test`, the routing test set in tests/, and `python -m bench.router`.
File format (TOML):

    now = 2026-11-22T10:00:00           # optional: what "tomorrow" means
    case = [
      { text = "set a timer for five minutes", intent = "timer.set", slots = { duration = 300 } },
    ]
"""

from __future__ import annotations

import datetime as dt
import math
import tomllib
from collections import Counter
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from assistant.router import Route, Router


class PhraseCase(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: str = Field(min_length=1)
    intent: str = Field(min_length=1, description="'skill.intent'; the fallback intent for out-of-domain text.")
    slots: dict[str, Any] = Field(default_factory=dict, description="Expected values of these slots (others ignored).")
    also: list[str] = Field(
        default_factory=list, description="Other intents that serve it too (a direct device command via home.command)."
    )


class PhraseFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    now: dt.datetime | None = None
    case: list[PhraseCase] = Field(min_length=1)


class CaseResult(BaseModel):
    case: PhraseCase
    route: Route
    intent_ok: bool
    slots_ok: bool

    @property
    def ok(self) -> bool:
        return self.intent_ok and self.slots_ok

    @property
    def got(self) -> str:
        return self.route.intent or "(none)"


class Report(BaseModel):
    results: list[CaseResult]

    @property
    def accuracy(self) -> float:
        return sum(r.ok for r in self.results) / len(self.results)

    @property
    def deterministic(self) -> list[CaseResult]:
        return [r for r in self.results if r.route.stage == "template"]

    @property
    def deterministic_precision(self) -> float:
        routed = self.deterministic
        return sum(r.ok for r in routed) / len(routed) if routed else math.nan

    def by_stage(self) -> dict[str, int]:
        return dict(Counter(r.route.stage for r in self.results))

    def confusion(self) -> dict[tuple[str, str], int]:
        """(expected, got) -> count, mistakes only."""
        return dict(Counter((r.case.intent, r.got) for r in self.results if not r.intent_ok))

    def confusion_table(self) -> str:
        """Per expected intent: cases, correct, and where the wrong ones went."""
        rows = []
        expected = sorted({r.case.intent for r in self.results})
        for intent in expected:
            mine = [r for r in self.results if r.case.intent == intent]
            wrong = Counter(r.got for r in mine if not r.intent_ok)
            slot_errors = sum(1 for r in mine if r.intent_ok and not r.slots_ok)
            went = ", ".join(f"{k} x{v}" for k, v in wrong.most_common()) or "-"
            rows.append((intent, len(mine), sum(r.ok for r in mine), slot_errors, went))
        width = max(len(r[0]) for r in rows)
        lines = [f"{'expected intent':<{width}}  cases  ok  slot-errors  misrouted to"]
        lines += [f"{i:<{width}}  {n:>5}  {ok:>2}  {se:>11}  {went}" for i, n, ok, se, went in rows]
        return "\n".join(lines)


def load_phrases(path: Path) -> PhraseFile:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
        return PhraseFile.model_validate(data)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ValueError(f"{path}: {exc}") from None
    except ValidationError as exc:
        where = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise ValueError(f"{path}: {where}") from None


def same_value(expected: Any, got: Any) -> bool:
    if isinstance(expected, int | float) and isinstance(got, int | float):
        return math.isclose(expected, got, rel_tol=1e-6, abs_tol=1e-9)
    if isinstance(expected, str) and isinstance(got, str):
        return expected.lower() == got.lower()
    return bool(expected == got)


def evaluate(router: Router, phrases: PhraseFile, *, classify: bool = True) -> Report:
    now = phrases.now or dt.datetime.now()
    results = []
    for case in phrases.case:
        route = router.route(case.text, now=now, classify=classify)
        intent_ok = route.intent in (case.intent, *case.also)
        slots_ok = route.intent == case.intent and all(same_value(v, route.slots.get(k)) for k, v in case.slots.items())
        results.append(CaseResult(case=case, route=route, intent_ok=intent_ok, slots_ok=slots_ok))
    return Report(results=results)
