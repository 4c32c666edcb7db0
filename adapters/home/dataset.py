"""Home-control examples: free phrasing -> the HomeCommand JSON the skill validates and sends.

Training sentences are generated from the phrasings below over every device, room and value;
the held-out set (`heldout.toml`) is hand-written with other wordings and never trained on.
"""

from __future__ import annotations

import json
import random
import tomllib
from pathlib import Path

from assistant.config.schema import HomeConfig, HomeDevice
from assistant.skillhost.home import Home
from assistant.skillhost.llm import json_grammar
from assistant.skills import HomeCommand, HomeError
from assistant.training.recipe import Example, utterance_key
from assistant_skills.home import command_messages

HERE = Path(__file__).resolve().parent
HOME = HomeConfig.model_validate(tomllib.loads((HERE / "devices.toml").read_text())["home"])
GRAMMAR = json_grammar(HomeCommand)

# (kinds, action, phrasings); {d} device name, {r} room, {n} a number.
PHRASINGS: list[tuple[tuple[str, ...], str, list[str]]] = [
    (
        ("light",),
        "turn_on",
        [
            "turn on the {r} {d}",
            "switch the {d} in the {r} on",
            "it's too dark in the {r}",
            "i can't see a thing in the {r}",
            "{r} {d} on please",
            "give me some light in the {r}",
            "could you put the {d} on in the {r}",
            "the {r} is pitch black",
        ],
    ),
    (
        ("light",),
        "turn_off",
        [
            "turn off the {r} {d}",
            "switch the {d} in the {r} off",
            "kill the {d} in the {r}",
            "it's way too bright in the {r}",
            "{r} {d} off please",
            "lights out in the {r}",
            "nobody needs the {d} in the {r} now",
        ],
    ),
    (
        ("light",),
        "set_level",
        [
            "dim the {r} {d} to {n} percent",
            "set the {d} in the {r} to {n} percent",
            "{r} {d} at {n} percent",
            "bring the {r} {d} down to {n}",
            "i'd like the {d} in the {r} at {n} percent",
        ],
    ),
    (
        ("fan",),
        "turn_on",
        [
            "turn on the {d} in the {r}",
            "it's so hot in the {r}",
            "i'm sweating in the {r}",
            "get some air moving in the {r}",
            "start the {r} {d}",
        ],
    ),
    (
        ("fan",),
        "turn_off",
        [
            "turn off the {d} in the {r}",
            "stop the {r} {d}",
            "the {d} in the {r} is too noisy",
            "it's freezing with the {d} on in the {r}",
        ],
    ),
    (("fan",), "set_level", ["set the {r} {d} to {n} percent", "run the {d} in the {r} at {n} percent"]),
    (
        ("thermostat",),
        "set_temperature",
        [
            "set the heating to {t} degrees",
            "make it {t} degrees in here",
            "i want {t} degrees",
            "warm the house up to {t} degrees",
            "cool it down to {t} degrees",
            "thermostat to {t} please",
        ],
    ),
    (
        ("blinds",),
        "open",
        [
            "open the {d} in the {r}",
            "let some daylight into the {r}",
            "raise the {r} {d}",
            "pull up the {d} in the {r}",
        ],
    ),
    (
        ("blinds",),
        "close",
        [
            "close the {d} in the {r}",
            "lower the {r} {d}",
            "i want some privacy in the {r}",
            "the sun is blinding me in the {r}",
        ],
    ),
    (("blinds",), "set_level", ["set the {r} {d} to {n} percent", "{d} in the {r} halfway at {n} percent"]),
    # Devices the home has one of are often named without their room.
    (("fan", "blinds", "light"), "turn_on", ["switch on the {d}", "can you start the {d}", "{d} on"]),
    (("fan", "light"), "turn_off", ["switch off the {d}", "stop the {d} please", "that {d} can go off"]),
    (("blinds",), "open", ["open the {d}", "roll up the {d}", "let the sun in through the {d}"]),
    (("blinds",), "close", ["close the {d}", "roll down the {d}", "people can look in, close the {d}"]),
    (("light",), "turn_off", ["time to sleep in the {r}", "no more light in the {r}"]),
    (("lock",), "lock", ["lock the {d}", "lock up the {d}", "make sure the {d} is locked", "secure the {d}"]),
    (("lock",), "unlock", ["unlock the {d}", "open the lock on the {d}", "let my guest in through the {d}"]),
]


def _unique(device: HomeDevice) -> bool:
    """Named without a room, is it still clear which device is meant?"""
    return sum(d.name == device.name for d in HOME.devices) == 1


def _target(device: HomeDevice, action: str, value: float | None) -> str:
    return HomeCommand(device=device.name, action=action, value=value, room=device.room).model_dump_json()  # type: ignore[arg-type]


def _example(utterance: str, device: HomeDevice, action: str, value: float | None) -> Example:
    return Example(
        messages=command_messages(HOME.devices, utterance),
        target=_target(device, action, value),
        meta={"device": device.id, "action": action, "value": value},
    )


def train_examples(seed: int, n: int) -> list[Example]:
    rng = random.Random(seed)
    held = {utterance_key(e) for e in heldout_examples()}
    out: list[Example] = []
    pool = [
        (d, action, p)
        for kinds, action, ps in PHRASINGS
        for d in HOME.devices
        if d.kind in kinds
        for p in ps
        if "{r}" in p or d.room is None or _unique(d)
    ]
    while len(out) < n:
        device, action, phrasing = rng.choice(pool)
        name = rng.choice([device.name, *device.aliases]) if "{r}" in phrasing or _unique(device) else device.name
        value: float | None = None
        if "{n}" in phrasing:
            value = float(rng.choice(range(5, 100, 5)))
        if "{t}" in phrasing:
            value = float(rng.randint(16, 26))
        text = phrasing.format(
            d=name, r=device.room or "", n=f"{value:g}" if value else "", t=f"{value:g}" if value else ""
        )
        example = _example(" ".join(text.split()), device, action, value)
        if utterance_key(example) not in held:  # the generator may hit a held-out wording ("lock the door")
            out.append(example)
    return out


def heldout_examples() -> list[Example]:
    cases = tomllib.loads((HERE / "heldout.toml").read_text())["case"]
    devices = {d.id: d for d in HOME.devices}
    return [_example(c["text"], devices[c["device"]], c["action"], c.get("value")) for c in cases]


def score(example: Example, output: str) -> float:
    """1.0 when the JSON parses and names the same device, action and value."""
    try:
        command = HomeCommand.model_validate(json.loads(output))
        device = Home(HOME).resolve(command.device, command.room)
    except (ValueError, HomeError):
        return 0.0
    want = example.meta
    same_value = (command.value is None and want["value"] is None) or (
        command.value is not None and want["value"] is not None and abs(command.value - want["value"]) < 1e-6
    )
    return float(device.id == want["device"] and command.action == want["action"] and same_value)
