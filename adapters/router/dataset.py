"""Router classifier: an utterance no template matched -> the intent label, or `chat`.

The prompt is the router's own (`LlmClassifier.prompt`, built from the installed skills'
labels and descriptions). Training sentences come from three sources: hand-written paraphrase
patterns of the built-in intents (filled with durations, devices, numbers, phrases), samples of
every installed intent's templates and examples, and questions that belong to chat (the chat
adapter's question set plus near misses: command words in questions that are not commands).
The held-out set (`heldout.toml`, intent + slots as in `assistant skill test`) is hand-written.

The metric is the whole routing decision: `Router.route` with the classifier on the runtime
engine must give the expected intent and slots.
"""

from __future__ import annotations

import datetime as dt
import importlib.util
import json
import random
import tomllib
from functools import cache
from pathlib import Path

from assistant.config.schema import AssistantConfig
from assistant.engine import ChatMessage, Engine
from assistant.router import Router
from assistant.router.classifier import CHAT, LlmClassifier
from assistant.router.evaluate import PhraseFile, same_value
from assistant.skills.api import Intent
from assistant.training.recipe import Example, utterance_key

HERE = Path(__file__).resolve().parent
METRIC = "intent + slots exact match"
HOME_DEVICES = HERE.parent / "home" / "devices.toml"

DURATIONS = ["five minutes", "ten minutes", "two minutes", "an hour", "thirty seconds", "twenty minutes",
             "half an hour", "three minutes", "45 seconds", "fifteen minutes", "one hour", "7 minutes"]  # fmt: skip
NUMBERS = ["three", "seven", "twelve", "twenty", "forty two", "nine", "fifteen", "a hundred", "sixty", "8", "11"]
PHRASES = ["good morning", "thank you", "where is the bathroom", "i love you", "cheers", "see you tomorrow",
           "happy birthday", "how much does it cost", "my name is anna", "the bill please"]  # fmt: skip
LANGUAGES = ["french", "spanish", "german", "italian", "japanese", "dutch", "portuguese", "korean"]
UNITS = [("miles", "kilometers"), ("pounds", "kilograms"), ("cups", "milliliters"), ("feet", "meters"),
         ("celsius", "fahrenheit"), ("inches", "centimeters"), ("ounces", "grams"), ("liters", "gallons")]  # fmt: skip
ROOMS = ["kitchen", "bedroom", "living room", "hallway", "bathroom", "office"]

# label -> patterns; {d} duration, {n}/{m} numbers, {p} phrase, {l} language, {u}/{v} units, {r} room.
PARAPHRASES: dict[str, list[str]] = {
    "timer.set": ["begin a countdown of {d}", "count down {d} for me", "wake me in {d}", "tell me when {d} are up",
                  "i need a reminder in {d}", "alert me in {d}", "put a {d} countdown on", "give me {d} on the clock",
                  "ping me after {d}", "countdown {d}", "start counting down from {d}", "i need a countdown",
                  "can i get a timer going", "beep in {d}", "let me know in {d}", "time {d} for the eggs"],
    "timer.cancel": ["forget the countdown", "i don't need the timer anymore", "get rid of the timer",
                     "scrap my countdown", "abort the timer", "no more timer please", "drop the timer",
                     "the timer isn't needed", "kill the countdown", "call off the timer"],
    "timer.list": ["is the countdown still going", "how long does my timer have", "how far along is the timer",
                   "check my countdown", "is a timer running", "what's left on the countdown",
                   "when does my timer end", "how many minutes remain on the timer", "status of my timers",
                   "does the timer still run"],
    "clock.time": ["what's the hour now", "check the time for me", "is it late", "how early is it now",
                   "what time do we have", "time check", "can you look at the clock", "got the time",
                   "what time have you got", "is it noon yet", "current time please", "how late is it now"],
    "clock.date": ["which date is it today", "what's today", "is today a weekday", "which day are we",
                   "what's the date", "what month is it", "today's date please", "is it the weekend",
                   "what day of the month are we on", "date check"],
    "calculator.calculate": ["add {n} and {m}", "what do {n} and {m} make together", "take {m} away from {n}",
                             "multiply {n} by {m}", "divide {n} by {m}", "sum of {n} and {m}",
                             "help me with some math {n} times {m}", "do a quick sum {n} plus {m}",
                             "{n} minus {m} is what", "work out {n} times {m}", "i need to add {n} to {m}"],
    "calculator.convert": ["how heavy is {n} {u} in {v}", "change {n} {u} into {v}", "{n} {u} is how many {v}",
                           "turn {n} {u} into {v}", "express {n} {u} in {v}", "what does {n} {u} come to in {v}"],
    "home.command": ["it's too dark in the {r}", "it's chilly in the {r}", "the {r} is too bright", "i'm cold",
                     "it's boiling in here", "i can't see anything in the {r}", "the {r} is freezing",
                     "make the {r} cosier", "let some light into the {r}", "it's stuffy in the {r}",
                     "i'm going to bed", "the sun is in my eyes", "brighten up the {r}", "warm the {r} up",
                     "it's too hot in the {r}", "make it darker in the {r}", "i want some fresh air",
                     "secure the house", "can somebody get the door"],
    "translate.translate": ["could you render {p} in {l}", "give me the {l} translation of {p}",
                            "{p} in {l} please", "put {p} into {l}", "how is {p} said in {l}",
                            "i need {p} in {l}", "what would {p} be in {l}", "{l} translation of {p}",
                            "how do the {l} say {p}", "turn {p} into {l}"],
}  # fmt: skip

# Command words inside questions that are not commands: chat.
NEAR_MISSES = ["what is the history of the {x}", "who invented the {x}", "how does a {x} work", "why is a {x} useful",
               "tell me a story about a {x}", "what's your favourite {x}", "is a {x} expensive",
               "how old is the oldest {x}", "what is a {x} made of", "do you like the {x}"]  # fmt: skip
NEAR_WORDS = ["light bulb", "thermostat", "timer", "clock", "door lock", "calendar", "calculator", "fan",
              "window blind", "dictionary", "lamp", "stopwatch"]  # fmt: skip


def _chat_questions() -> list[str]:
    path = HERE.parent / "chat" / "dataset.py"
    spec = importlib.util.spec_from_file_location("adapters_chat_questions", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return list(module.questions())


@cache
def _router() -> Router:
    """The built-in skills' router with the home adapter's devices (classifier attached per call)."""
    from assistant.pipeline import Assistant

    home = tomllib.loads(HOME_DEVICES.read_text())["home"]
    return Assistant(AssistantConfig.model_validate({"home": home, "skills": {"classifier": False}}), None).router


@cache
def _classifier_prompt() -> str:
    router = _router()
    return LlmClassifier(None, _intents(router), router.templates).prompt[0].content


def _intents(router: Router) -> list[tuple[str, Intent]]:
    return [(label.split(".")[0], intent) for label, intent in router.intents.items()]


def _messages(text: str) -> list[ChatMessage]:
    return [ChatMessage(role="system", content=_classifier_prompt()), ChatMessage(role="user", content=text)]


def _fill(pattern: str, rng: random.Random) -> str:
    u, v = rng.choice(UNITS)
    n, m = rng.sample(NUMBERS, 2)
    values = {"d": rng.choice(DURATIONS), "n": n, "m": m, "p": rng.choice(PHRASES), "l": rng.choice(LANGUAGES),
              "u": u, "v": v, "r": rng.choice(ROOMS), "x": rng.choice(NEAR_WORDS)}  # fmt: skip
    return pattern.format(**values)


def _sentences(rng: random.Random, n: int) -> list[tuple[str, str]]:
    router = _router()
    from_templates = [(s, t.intent) for t in router.templates for s in t.expansions(6)]
    from_examples = [(e, label) for label, it in router.intents.items() if not it.fallback for e in it.examples]
    chat = _chat_questions()
    out: list[tuple[str, str]] = []
    while len(out) < n:
        kind = rng.random()
        if kind < 0.45:
            label = rng.choice(sorted(PARAPHRASES))
            out.append((_fill(rng.choice(PARAPHRASES[label]), rng), label))
        elif kind < 0.6:
            out.append(rng.choice(from_templates + from_examples))
        elif kind < 0.85:
            out.append((rng.choice(chat), CHAT))
        else:
            out.append((_fill(rng.choice(NEAR_MISSES), rng), CHAT))
    return out


def train_examples(seed: int, n: int) -> list[Example]:
    rng = random.Random(seed)
    held = {utterance_key(e) for e in heldout_examples()}
    out: list[Example] = []
    for text, label in _sentences(rng, n * 2):
        example = Example(messages=_messages(text), target=label)
        if utterance_key(example) not in held:
            out.append(example)
    return out[:n]


def heldout_examples() -> list[Example]:
    phrases = PhraseFile.model_validate(tomllib.loads((HERE / "heldout.toml").read_text()))
    fallback = f"{CHAT}.answer"
    return [
        Example(
            messages=_messages(c.text),
            target=CHAT if c.intent == fallback else c.intent,
            meta={"intent": c.intent, "slots": c.slots, "now": (phrases.now or dt.datetime(2026, 11, 22)).isoformat()},
        )
        for c in phrases.case
    ]


@cache
def _classifier(engine: Engine, adapter: str | None) -> LlmClassifier:
    router = _router()
    # The plain prompt with and without the adapter: the few-shot one is the base's own policy, measured
    # in bench.router, not the task the adapter learned.
    return LlmClassifier(engine, _intents(router), router.templates, adapter=adapter, llm_decides=True, few_shot=False)


def predict(engine: Engine, example: Example, adapter: str | None) -> str:
    """The whole routing decision with the classifier on `engine`: same prompt, with or without the adapter."""
    router = _router()
    router.classifier = _classifier(engine, adapter)
    route = router.route(example.messages[-1].content, now=dt.datetime.fromisoformat(example.meta["now"]))
    return json.dumps({"intent": route.intent, "slots": route.slots}, default=str)


def score(example: Example, output: str) -> float:
    got = json.loads(output)
    if got["intent"] != example.meta["intent"]:
        return 0.0
    return float(all(same_value(v, got["slots"].get(k)) for k, v in example.meta["slots"].items()))
