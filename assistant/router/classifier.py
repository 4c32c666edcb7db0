"""LLM intent classifier for utterances no template matched.

The nearest example phrasings (`rapidfuzz`) propose up to three intents; the LLM, whose output
a GBNF grammar restricts to those labels or `chat`, picks one. The prompt is fixed (labels and
descriptions), so its KV state stays cached across utterances.

With a trained router adapter (`adapters/router`, `[adapters.router]`), or a base model able to
(`llm_decides`: the standard profile's 1.5B), the LLM itself is the judge: it chooses among every
label and `chat`, with no similarity gate. Without an adapter its prompt then carries each label's
example phrasings (few-shot). Decoding stops as soon as the text so far fits only one label, so
a choice costs the utterance's prefill and one or two decode steps.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence

from rapidfuzz import fuzz, process

from assistant.engine import ChatMessage, Engine, EngineError
from assistant.router.templates import Template
from assistant.skills.api import Intent
from assistant.skills.slots import Text
from assistant.text import normalize

log = logging.getLogger("assistant.router")
CHAT = "chat"
_SYSTEM = (
    "You route requests for a voice assistant. Reply with the label of the request only. "
    "Use 'chat' for questions and conversation that no label covers."
)
_FEW_SHOT = (
    "You route requests for a voice assistant. Reply with the label of the request only.\n"
    "A request that a label below handles gets that label, however it is phrased: casual, indirect, "
    "polite or with filler words. Everything else is 'chat': general knowledge, how things work, advice, "
    "opinions, stories, small talk, and sentences that only mention a device, a timer, a time, a number or a "
    "language without asking the assistant to do it now."
)
_CHAT_LINE = f"\n- {CHAT}: anything else"
# General questions and near misses as worked examples (none of them is in the held-out routing set).
_CHAT_SHOTS = (
    "what is the history of the light bulb",
    "what is the capital of italy",
    "how do I make pancakes",
    "what is a timer in electronics",
    "who wrote hamlet",
    "why is the sky blue",
    "thank you very much",
    "what does a thermostat do",
)


class LlmClassifier:
    """Nearest examples propose, the LLM decides; only the nearest proposal, confirmed by the LLM, is accepted.

    An utterance with no example close to it (rapidfuzz token-sort similarity below
    `min_similarity`) goes straight to the chat fallback without an LLM call: that is where
    general questions end, and a small base model would otherwise misfire commands on them.
    `adapter` (a loaded LoRA trained for this prompt) switches to letting the LLM decide alone
    (`llm_decides`; settable apart from the adapter to measure the base model the same way).
    """

    def __init__(
        self,
        engine: Engine | None,
        intents: Sequence[tuple[str, Intent]],
        templates: Sequence[Template],
        *,
        candidates: int = 3,
        min_similarity: float = 60.0,
        adapter: str | None = None,
        llm_decides: bool | None = None,
        few_shot: bool | None = None,
        timeout_s: float = 5.0,
    ):
        self.engine = engine
        self.timeout_s = timeout_s
        self.adapter = adapter
        self.llm_decides = adapter is not None if llm_decides is None else llm_decides
        self.candidates = candidates
        self.min_similarity = min_similarity
        self.labels: dict[str, Intent] = {}
        self.examples: list[str] = []
        self.example_labels: list[str] = []
        for skill, it in intents:
            if it.fallback:
                continue
            label = f"{skill}.{it.name}"
            self.labels[label] = it
            samples = [s for t in templates if t.intent == label and not _has_free_text(t) for s in t.expansions(2)]
            for ex in [*it.examples, *samples]:
                self.examples.append(normalize(ex))
                self.example_labels.append(label)
        # Worked examples help a base model deciding alone; an adapter was trained on the plain prompt.
        self.prompt = self._prompt(few_shot=self.llm_decides and adapter is None if few_shot is None else few_shot)

    def _prompt(self, *, few_shot: bool) -> list[ChatMessage]:
        """The fixed part of the prompt (its KV state stays cached): labels, and worked examples as turns."""
        lines = [f"- {label}: {it.description or label}" for label, it in self.labels.items()]
        if not few_shot:  # the router adapter was trained on this one
            return [ChatMessage(role="system", content=f"{_SYSTEM}\nLabels:\n" + "\n".join(lines) + _CHAT_LINE)]
        prompt = [ChatMessage(role="system", content=f"{_FEW_SHOT}\nLabels:\n" + "\n".join(lines) + _CHAT_LINE)]
        # The skill authors' own examples, taken round-robin over the labels with general questions in
        # between, so that no label is favoured for being last; template expansions read too stiff.
        shots = [[(ex, label) for ex in it.examples[:2]] for label, it in self.labels.items()]
        for i, chat in enumerate(_CHAT_SHOTS):
            shots.insert(1 + i * max(1, len(shots) // len(_CHAT_SHOTS)), [(chat, CHAT)])
        for rank in range(2):
            for text, label in (group[rank] for group in shots if len(group) > rank):
                prompt += [
                    ChatMessage(role="user", content=text, fixed=True),
                    ChatMessage(role="assistant", content=label, fixed=True),
                ]
        return prompt

    def warm(self) -> None:
        """Prefill the fixed prompt now, so that the first unmatched utterance does not pay for it."""
        if self.engine is not None:
            self._ask("hello", list(self.labels))

    def nearest(self, normalized: str, limit: int) -> list[tuple[str, str, float]]:
        """(example, label, similarity 0-100), best first, one per label."""
        hits = process.extract(normalized, self.examples, scorer=fuzz.token_sort_ratio, limit=limit * 8)
        out: dict[str, tuple[str, str, float]] = {}
        for _, score, i in hits:
            out.setdefault(self.example_labels[i], (self.examples[i], self.example_labels[i], score))
        return list(out.values())[:limit]

    def _ask(self, text: str, labels: Sequence[str]) -> str | None:
        """The LLM's pick among `labels` and chat (None if the engine failed)."""
        assert self.engine is not None
        grammar = "root ::= " + " | ".join(f'"{label}"' for label in [*labels, CHAT])
        messages = [*self.prompt, ChatMessage(role="user", content=text)]
        cancel = threading.Event()
        try:
            gen = self.engine.generate(messages, max_tokens=16, grammar=grammar, adapter=self.adapter, cancel=cancel)
            t0 = time.perf_counter()
            choices, chosen = [*labels, CHAT], None
            for _ in gen:  # the budget is the classifier's own time, not the wait for a busy engine
                fits = [c for c in choices if c.startswith(gen.text.strip())]
                if len(fits) == 1 and chosen is None:  # only this label can follow: skip decoding the rest
                    chosen = fits[0]
                    cancel.set()
                if time.perf_counter() - t0 - gen.stats.waited_s() > self.timeout_s:
                    cancel.set()
            if chosen is not None:
                return chosen
            if gen.stats.finish_reason == "cancelled":
                log.warning("intent classifier took over %.1f s: the chat fallback answers", self.timeout_s)
                return None
            return gen.text.strip()
        except EngineError as exc:
            log.warning("intent classifier failed: %s", exc)
            return None

    def _trained(self, text: str, normalized: str) -> tuple[str | None, float, str]:
        choice = self._ask(text, list(self.labels))
        if choice is None:
            return None, 0.0, "the LLM classifier failed"
        if choice not in self.labels:
            return None, 0.0, f"the LLM chose '{choice}'"
        similar = {label: score for _, label, score in self.nearest(normalized, len(self.labels))}
        return choice, similar.get(choice, 0.0) / 100, f"the LLM chose '{choice}' among all intents"

    def classify(self, text: str, normalized: str) -> tuple[str | None, float, str]:
        if self.llm_decides and self.engine is not None:
            return self._trained(text, normalized)
        near = self.nearest(normalized, self.candidates)
        if not near or near[0][2] < self.min_similarity:
            best = f"'{near[0][0]}' {near[0][2]:.0f}%" if near else "none"
            return None, 0.0, f"no example is close (best {best} < {self.min_similarity:.0f}%)"
        proposals = ", ".join(f"{label} ('{ex}' {score:.0f}%)" for ex, label, score in near)
        if near[0][2] >= 100 and (len(near) == 1 or near[1][2] < 100):
            # Word for word one of the intent's own examples: not a guess, and the small base model
            # was measured to send even these to chat ("let some light in" -> chat).
            return near[0][1], 1.0, f"'{near[0][0]}' is one of {near[0][1]}'s examples"
        if self.engine is None:
            return None, 0.0, f"nearest examples: {proposals}; no LLM to confirm"
        labels = [label for _, label, _ in near]
        choice = self._ask(text, labels)
        if choice is None:
            return None, 0.0, f"nearest examples: {proposals}; the LLM classifier failed"
        if choice != labels[0]:
            # The examples and the LLM disagree: a command must not fire on a guess.
            return None, 0.0, f"nearest examples: {proposals}; the LLM chose '{choice}', not the nearest: not confirmed"
        return choice, near[0][2] / 100, f"nearest examples: {proposals}; the LLM confirmed '{choice}'"


def _has_free_text(template: Template) -> bool:
    """Free-text slots sample as placeholder words that would look similar to anything."""
    return any(isinstance(template.slots[name], Text) for name in template.groups.values())
