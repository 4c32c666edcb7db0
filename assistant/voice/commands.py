"""The voice commands: the grammar corpus built from the skills' phrases, and the check that keeps
wrong guesses out (both need the router; the recognizers only get a list of sentences).

A grammar-constrained recognizer turns any speech into *some* command. A result is accepted only
if its words are confident enough and the router matches it to a template deterministically;
otherwise the free-recognition transcript (if any) goes to the router and the LLM instead.
"""

from __future__ import annotations

import re
import string

from assistant.asr.base import Transcript
from assistant.config.schema import AssistantConfig
from assistant.router import Router

_CANCEL = ["cancel", "never mind", "stop", "forget it", "no thanks", "yes", "no"]
_WORD = re.compile(r"[^\W\d_]+(?:'[^\W\d_]+)?")


def command_corpus(
    router: Router, per_template: int = 24, extra: list[str] | None = None, wake: str | None = None
) -> list[str]:
    """Sentences for the command language model: every template with its slot values rotated.

    With `wake`, each sentence also appears after the wake phrase: the recognizer starts at the
    wake word's first syllable (its end is only known to ±100 ms) and `strip_wake` removes it.
    """
    out: dict[str, None] = {}
    for tpl in router.templates:
        for s in tpl.spoken(per_template):
            out[s] = None
    for s in router.phrases():
        if "something" not in s.split() and "nothing" not in s.split():
            out[s] = None
    for tpl in router.templates:  # bare slot values: answers to "For how long?" and the like
        for slot in tpl.slots.values():
            for v in slot.samples():
                out[v] = None
    for s in [*_CANCEL, *(extra or [])]:
        out[s] = None
    sentences = [s for s in out if s.strip()]
    if wake:
        sentences += [f"{wake} {s}" for s in sentences]
    return sentences


def voice_corpus(cfg: AssistantConfig, router: Router) -> list[str]:
    """The recognizer's command sentences as configured: none when `asr.grammar` is off."""
    wake = cfg.wake_word.phrase.lower() if cfg.wake_word.enabled else None
    return command_corpus(router, wake=wake) if cfg.asr.grammar else []


def strip_wake(text: str, wake: str) -> str:
    """The command after the wake phrase (also when free recognition misheard its first word)."""
    words, wake_words = text.split(), wake.lower().split()
    bare = [w.strip(string.punctuation).lower() for w in words]  # neural recognizers write "Hey computer,"
    if wake_words and wake_words[-1] in bare[: len(wake_words) + 1]:
        return " ".join(words[bare.index(wake_words[-1]) + 1 :])
    return text


def is_command(router: Router, text: str, *, expecting_answer: bool = False, complete: bool = False) -> bool:
    """True if the router claims `text` with a template (or an open question may take it).

    `complete` also requires every required slot to be filled: such a command cannot grow any
    more, so the turn may end before the full silence hang-over.
    """
    if not text.strip():
        return False
    if expecting_answer and not complete:
        return True
    route = router.route(text, classify=False)
    return route.stage == "template" and not (complete and route.missing)


def accept(
    command: Transcript | None, router: Router, min_confidence: float, *, expecting_answer: bool = False
) -> tuple[bool, str]:
    """(accepted, reason) for a grammar transcript."""
    if command is None or not command.text.strip():
        return False, "no command words"
    if command.confidence < min_confidence:
        return False, f"confidence {command.confidence:.2f} < {min_confidence:.2f}"
    if not is_command(router, command.text, expecting_answer=expecting_answer):
        return False, f"'{command.text}' is not a complete command"
    return True, "command"


def words_of(text: str) -> list[str]:
    return _WORD.findall(text.lower())
