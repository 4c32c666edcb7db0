"""Text normalization shared by the router, the slot parsers and the voice commands.

It sits below all of them, so none has to import another for it (router.templates and
skills.slots used to import each other through it).
"""

from __future__ import annotations

import re
import unicodedata

__all__ = ["COURTESY", "normalize"]

# Politeness before a request ("could you ...", "please ..."), in normalized words: the router strips
# it to match a command, the safety check to tell a polite request from a question.
COURTESY = r"^(?:(?:please|hey|ok|okay|so|can you|could you|would you|will you|i want you to) )+"


def normalize(text: str) -> str:
    """Lowercase words separated by single spaces; math operators kept as words of their own."""
    t = unicodedata.normalize("NFKC", text).lower()
    t = t.replace("\u2019", "'").replace("\u2018", "'").replace("\u00d7", "*").replace("\u00f7", "/")
    t = re.sub(r"(?<=\d),(?=\d{3}\b)", "", t)  # 1,000
    t = t.replace("%", " percent ")
    t = re.sub(r"(?<=[a-z])-(?=[a-z])", " ", t)  # twenty-five
    t = re.sub(r"([+*/^=()-])", r" \1 ", t)
    t = re.sub(r"[^\w\s'.:+*/^=()-]", " ", t)
    t = re.sub(r"(?<!\d)[.:]|[.:](?!\d)", " ", t)  # periods and colons outside numbers
    t = re.sub(r"(?<!\w)'|'(?!\w)", " ", t)  # quote marks, not apostrophes
    return " ".join(t.split())
