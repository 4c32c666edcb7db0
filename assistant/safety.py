"""What makes an utterance a clear command, and input made safe at the boundary.

A device acts only on a clear command. Whatever stage routed the text (a template, the LLM
classifier, the LLM's JSON), a negated request ("don't unlock the front door"), a question ("is the
front door locked") or text that tries to instruct the model ("ignore previous instructions and
...", chat control tokens) is never turned into a device action. These checks are deterministic
word rules on purpose: the small on-device models were measured to unlock a door for all three.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Literal

from assistant.text import COURTESY, normalize

Concern = Literal["negation", "question", "injection"]

MAX_INPUT_CHARS = 2000  # a turn's text; longer input is cut (and the cut is said in the log)

_ACTION_VERBS = (
    "turn|switch|put|open|opened|opening|close|closed|closing|shut|lock|locked|locking|unlock|unlocked|unlocking|"
    "raise|lower|dim|brighten|set|"
    "start|stop|kill|light|change|make|let|bring|activate|deactivate|enable|disable|leave|run|crank|boost"
)
# A negator followed, within four words, by an action verb: "please do not unlock", "never open".
_NEGATION = re.compile(
    r"\b(?:don't|dont|do not|does not|doesn't|did not|didn't|never|not|no need to|mustn't|must not|shouldn't|"
    rf"should not|won't|wont|will not|avoid|refrain from)\b(?: \w+){{0,4}}? \b(?:{_ACTION_VERBS})\b"
)
_COURTESY = re.compile(COURTESY)
_QUESTION = re.compile(
    r"^(?:is|are|was|were|am|does|do|did|has|have|had|what|which|who|whom|whose|when|where|why|how|should|shall|"
    r"may|might|isn't|aren't|doesn't|didn't|hasn't|haven't)\b|^(?:tell me|let me know|check|find out) "
    r"(?:if|whether)\b|\b(?:is|are) (?:it|they|the \w+) (?:on|off|open|closed|locked|unlocked)$"
)
_INJECTION = re.compile(
    r"\b(?:ignore|disregard|forget) (?:all |any |the |your |my )?(?:previous |prior |above |earlier |former )?"
    r"(?:instructions|instruction|prompts?|rules|messages)\b|\bsystem prompt\b|\byou are now\b|"
    r"\bnew instructions\b|\bjailbreak\b|<\||\|>|\[/?inst\]|^\s*(?:system|assistant)\s*:",
    re.IGNORECASE | re.MULTILINE,
)


def command_concern(text: str) -> tuple[Concern, str] | None:
    """Why `text` is not a clear command (the kind, and the words that say so), or None if it is."""
    hit = _INJECTION.search(text)
    if hit:
        return "injection", hit.group(0).strip()
    words = normalize(text)
    hit = _NEGATION.search(words)
    if hit:
        return "negation", hit.group(0)
    request = _COURTESY.sub("", words)
    hit = _QUESTION.search(request)
    if hit or (text.rstrip().endswith("?") and request == words):
        return "question", hit.group(0) if hit else "?"
    return None


def clean_input(text: str) -> tuple[str, str | None]:
    """The text a turn works on, and what was changed (None if nothing): lone surrogates (from
    undecodable bytes), control and private-use characters are dropped, and the length is capped."""
    note = []
    kept = "".join(ch for ch in text if ch in "\n\t" or unicodedata.category(ch) not in ("Cc", "Cs", "Co"))
    if kept != text:
        note.append(f"dropped {len(text) - len(kept)} undecodable or control characters")
    if len(kept) > MAX_INPUT_CHARS:
        note.append(f"cut {len(kept)} characters to {MAX_INPUT_CHARS}")
        kept = kept[:MAX_INPUT_CHARS]
    return kept, "; ".join(note) or None
