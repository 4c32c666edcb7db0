"""Chat in spoken style: general questions -> a complete answer of one or two short sentences,
no lists, markdown or emoji, ready for text-to-speech as it streams.

Targets are the base model's own answers, chosen by rejection sampling (`python
adapters/chat/dataset.py` regenerates `answers.jsonl`): for each generated question, sampled
answers are drawn until one passes the spoken-style check and is not a refusal. The adapter so
learns the form of an answer, not new facts; the held-out questions (`heldout.toml`) are
hand-written on other topics and never trained on.
"""

from __future__ import annotations

import itertools
import json
import random
import re
import sys
import threading
import tomllib
import unicodedata
from pathlib import Path
from typing import Any

from assistant.config.schema import EngineConfig
from assistant.engine import ChatMessage
from assistant.training.recipe import Example, utterance_key

HERE = Path(__file__).resolve().parent
ANSWERS = HERE / "answers.jsonl"
SYSTEM = EngineConfig().system_prompt  # what the chat fallback sends by default
METRIC = "spoken style"
MAX_TOKENS = 96  # the engine's default reply budget
MAX_WORDS = 40
MAX_SENTENCES = 2

# Question patterns x topics. Held-out questions use other topics (see heldout.toml).
PATTERNS: list[tuple[str, list[str]]] = [
    (
        "what is {}",
        [
            "a volcano",
            "electricity",
            "a black hole",
            "democracy",
            "the internet",
            "an atom",
            "a rainbow",
            "inflation",
            "a galaxy",
            "dna",
            "a glacier",
            "a hurricane",
            "yoga",
            "a vaccine",
            "gravity",
            "the stock market",
            "a computer virus",
            "an eclipse",
        ],
    ),
    (
        "how does {} work",
        [
            "a fridge",
            "a microwave",
            "the heart",
            "a solar panel",
            "wifi",
            "a compass",
            "a rocket",
            "an elevator",
            "a battery",
            "a camera",
            "gps",
            "a thermometer",
        ],
    ),
    (
        "why {}",
        [
            "do cats purr",
            "is the ocean salty",
            "do leaves change colour",
            "do we dream",
            "do birds migrate",
            "is grass green",
            "do we yawn",
            "does ice float",
            "do stars twinkle",
            "do onions make you cry",
            "do we have seasons",
            "is the sea blue",
        ],
    ),
    (
        "who was {}",
        [
            "albert einstein",
            "cleopatra",
            "marie curie",
            "julius caesar",
            "leonardo da vinci",
            "isaac newton",
            "mozart",
            "nelson mandela",
            "charles darwin",
            "ada lovelace",
            "genghis khan",
            "florence nightingale",
        ],
    ),
    (
        "how do i {}",
        [
            "make tea",
            "fall asleep faster",
            "cook rice",
            "tie a tie",
            "learn a language",
            "clean a cast iron pan",
            "save money",
            "start running",
            "plant tomatoes",
            "remove a coffee stain",
            "stay focused",
            "make friends in a new city",
        ],
    ),
    (
        "tell me a joke about {}",
        ["cats", "computers", "the weather", "teachers", "pirates", "coffee", "dinosaurs", "math"],
    ),
    (
        "can you recommend {}",
        [
            "a movie for tonight",
            "a board game",
            "a podcast",
            "a hobby",
            "a houseplant",
            "a name for my goldfish",
            "a weekend activity",
            "a healthy snack",
        ],
    ),
    (
        "what should i {}",
        [
            "eat for breakfast",
            "do this weekend",
            "read next",
            "do when i'm bored",
            "pack for a beach trip",
            "wear to a wedding",
        ],
    ),
    (
        "what's the difference between {}",
        [
            "a virus and bacteria",
            "weather and climate",
            "a frog and a toad",
            "a lake and a pond",
            "speed and velocity",
            "a crocodile and an alligator",
        ],
    ),
    (
        "tell me about {}",
        [
            "the moon",
            "penguins",
            "ancient egypt",
            "the amazon rainforest",
            "honey bees",
            "the great wall of china",
            "octopuses",
            "mount everest",
            "the roman empire",
        ],
    ),
    (
        "how many {}",
        [
            "bones are in the human body",
            "planets are there",
            "days are in a leap year",
            "players are on a football team",
            "strings does a guitar have",
            "teeth do adults have",
        ],
    ),
    (
        "explain {} in simple words",
        [
            "photosynthesis",
            "the water cycle",
            "evolution",
            "taxes",
            "a recession",
            "electric cars",
            "the immune system",
            "machine learning",
            "tides",
        ],
    ),
    (
        "is it {}",
        [
            "healthy to drink coffee",
            "safe to swim after eating",
            "bad to crack your knuckles",
            "true that goldfish forget everything",
            "better to rent or buy a house",
            "okay to nap every day",
        ],
    ),
    (
        "what are some {}",
        [
            "fun facts about sharks",
            "tips for a job interview",
            "good stretches for the back",
            "ways to reduce stress",
            "easy dinners to cook",
            "games for a long car ride",
        ],
    ),
    (
        "{}",
        [
            "good morning",
            "i'm bored",
            "i had a long day",
            "you're funny",
            "what can you do",
            "are you a robot",
            "do you have feelings",
            "say something nice",
            "i can't sleep",
            "what's your favourite colour",
            "i feel sad today",
            "motivate me",
        ],
    ),
]

_MARKDOWN = re.compile(r"[*#`_~|>\[\]]|^\s*(\d{1,2}[.)]|[-+•])\s", re.MULTILINE)
_LIST_MARKER = re.compile(r"^\s*\d{1,2}[.)]\s", re.MULTILINE)  # "1. " is not the end of a sentence
_SENTENCE_END = re.compile(r"[.!?]+(?=[\"')\]]*(\s|$))")
_REFUSAL = re.compile(r"\b(i'm sorry|i am sorry|as an ai|as a voice assistant|i'm not (able|equipped)|i can't help|"
                      r"i cannot help|i don't have (access|the ability))", re.IGNORECASE)  # fmt: skip


def _messages(question: str) -> list[ChatMessage]:
    return [ChatMessage(role="system", content=SYSTEM), ChatMessage(role="user", content=question)]


def style_problems(text: str) -> list[str]:
    """Why a reply would not be a good spoken answer (empty when it is)."""
    problems = []
    stripped = text.strip()
    if not any(ch.isalnum() for ch in stripped):
        return ["empty"]
    if _MARKDOWN.search(stripped):
        problems.append("markdown or list")
    if "\n" in stripped:
        problems.append("several lines")
    if any(unicodedata.category(ch) in ("So", "Sk", "Cs", "Co") for ch in stripped):
        problems.append("emoji or symbols")
    sentences = len(_SENTENCE_END.findall(_LIST_MARKER.sub("", stripped)))
    if sentences > MAX_SENTENCES:
        problems.append(f"{sentences} sentences")
    if len(stripped.split()) > MAX_WORDS:
        problems.append(f"{len(stripped.split())} words")
    if not stripped.rstrip("\"')").endswith((".", "!", "?")):
        problems.append("unfinished")
    return problems


def questions() -> list[str]:
    return [pattern.format(topic) for pattern, topics in PATTERNS for topic in topics]


def train_examples(seed: int, n: int) -> list[Example]:
    if not ANSWERS.is_file():
        raise FileNotFoundError(f"{ANSWERS} is missing: run `python {Path(__file__).relative_to(HERE.parent.parent)}`")
    rows = [json.loads(line) for line in ANSWERS.read_text().splitlines() if line.strip()]
    held = {utterance_key(e) for e in heldout_examples()}
    pool = [Example(messages=_messages(r["question"]), target=r["answer"]) for r in rows]
    pool = [e for e in pool if utterance_key(e) not in held]
    random.Random(seed).shuffle(pool)
    # Fewer distinct answers than asked for: repeat them (epochs in all but name).
    return list(itertools.islice(itertools.cycle(pool), n)) if pool else []


def heldout_examples() -> list[Example]:
    cases = tomllib.loads((HERE / "heldout.toml").read_text())["question"]
    return [Example(messages=_messages(q), target="") for q in cases]


def score(example: Example, output: str) -> float:
    return float(not style_problems(output))


def _sample(engine: Any, question: str, sampling: Any) -> str:
    """One answer, abandoned as soon as it is too long to pass (most failures are long)."""
    stop = threading.Event()
    text = ""
    for piece in engine.generate(_messages(question), max_tokens=MAX_TOKENS, sampling=sampling, cancel=stop):
        text += piece
        if len(text.split()) > MAX_WORDS or len(_SENTENCE_END.findall(text)) > MAX_SENTENCES:
            stop.set()
    return text.strip()


def distill(tries: int = 8) -> None:
    """Rebuild answers.jsonl with the base model (rejection sampling against the style check)."""
    from assistant.config.schema import AssistantConfig
    from assistant.engine import Sampling
    from assistant.engine.llama_cpp import LlamaCppEngine
    from assistant.modelstore import ModelStore

    cfg = AssistantConfig()
    store = ModelStore.from_config(cfg)
    manifest = store.get(cfg.engine.base_model)
    engine = LlamaCppEngine(store.locate(manifest), name=manifest.name, base_sha256=manifest.sha256, threads=2)
    kept = 0
    qs = questions()
    with ANSWERS.open("w") as out:
        for i, q in enumerate(qs):
            for t in range(tries):
                sampling = Sampling(temperature=0.0 if t == 0 else 0.8, seed=1000 * i + t)
                answer = _sample(engine, q, sampling)
                if not style_problems(answer) and not _REFUSAL.search(answer):
                    answer = answer[0].upper() + answer[1:]
                    out.write(json.dumps({"question": q, "answer": answer, "try": t}) + "\n")
                    kept += 1
                    break
            print(f"\r{i + 1}/{len(qs)} questions, {kept} answers kept", end="", file=sys.stderr)
    engine.close()
    print(file=sys.stderr)


if __name__ == "__main__":
    distill()
