"""Translate: an English phrase -> the everyday phrase a native speaker says, in French, Spanish, German,
Italian, Portuguese or Dutch, with the translate skill's own prompt (`assistant_skills/translate.py`).

The standard base translates word by word ("soy hambriento", "je suis faim" for I am thirsty, "il
bilancio" for the bill). `pairs.toml` (547 pairs) and `heldout.toml` (72 cases, every accepted
variant listed) were written by two helper sessions from their own knowledge; neither holds a phrase of
the other or of `bench/data/quality.toml`'s translations (checked here), so both stay blind.
"""

from __future__ import annotations

import random
import tomllib
import unicodedata
from pathlib import Path

from assistant.engine import ChatMessage
from assistant.training.recipe import Example
from assistant_skills.translate import skill

HERE = Path(__file__).resolve().parent
METRIC = "an accepted translation occurs in the reply"
MAX_TOKENS = 48  # the skill's own budget


def messages(text: str, language: str) -> list[ChatMessage]:
    """What the translate skill sends (its handler builds the same two messages)."""
    return [
        ChatMessage(role="system", content=skill.system_prompt or ""),
        ChatMessage(role="user", content=f"Translate to {language}: {text}"),
    ]


def _load(name: str, key: str) -> list[dict[str, object]]:
    return list(tomllib.loads((HERE / name).read_text(encoding="utf-8"))[key])


def _quality_phrases() -> set[str]:
    """The phrases bench.quality asks to translate: never trained on, so that bench stays blind."""
    import re

    quality = Path(__file__).resolve().parents[3] / "bench" / "data" / "quality.toml"
    out = set()
    for q in tomllib.loads(quality.read_text(encoding="utf-8"))["question"]:
        if q["kind"] == "translate":
            t = q["text"].rstrip("?.")
            m = re.match(r"(?:Translate|How do you say) (.+?) (?:into|in) \w+$", t)
            if m:
                out.add(m.group(1).lower())
    return out


def train_examples(seed: int, n: int) -> list[Example]:
    held = {str(c["text"]) for c in _load("heldout.toml", "case")}
    reserved = held | _quality_phrases()
    pairs = [p for p in _load("pairs.toml", "pair") if str(p["text"]) not in reserved]
    random.Random(seed).shuffle(pairs)
    return [
        Example(messages=messages(str(p["text"]), str(p["language"])), target=str(p["translation"]), meta=p)
        for p in pairs[:n]
    ]


def heldout_examples() -> list[Example]:
    return [
        Example(messages=messages(str(c["text"]), str(c["language"])), target="", meta=c)
        for c in _load("heldout.toml", "case")
    ]


def canon(text: str) -> str:
    """Lowercase, no punctuation (apostrophes and hyphens become spaces), accents folded, spaces collapsed."""
    text = unicodedata.normalize("NFKD", text.lower())
    text = "".join(ch for ch in text if not unicodedata.combining(ch))
    return " ".join("".join(ch if ch.isalnum() else " " for ch in text).split())


def score(example: Example, output: str) -> float:
    answer = f" {canon(output)} "
    return float(any(f" {canon(str(a))} " in answer for a in example.meta["accept"]))  # type: ignore[union-attr]
