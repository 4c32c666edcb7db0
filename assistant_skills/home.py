"""Home control: the integrator's devices and rooms ([[home.devices]] in the config) by voice.

Fixed phrasings are matched by templates; free phrasing ("it's too dark in here") goes to the
LLM, with this skill's adapter when configured, which must produce a `HomeCommand` as JSON
under a grammar; the command is validated against the configured devices before it is sent.
"""

from __future__ import annotations

from collections.abc import Sequence

from assistant.skills import ChatMessage, Context, Device, Enum, HomeCommand, Number, Reply, Skill, describe

SYSTEM_PROMPT = (
    "You control smart-home devices. Reply with one JSON command: device (one of the listed names), "
    "action (turn_on, turn_off, toggle, set_level, set_temperature, open, close, lock, unlock), "
    "value (a number for set_level or set_temperature, else null) and room (or null)."
)

skill = Skill(
    "home",
    description="Turns devices on and off, dims lights, sets the thermostat, opens blinds, locks doors.",
    permissions=["home.control", "llm"],
    adapter="home",
    system_prompt=SYSTEM_PROMPT,
)

# With no devices configured, commands still reach this skill through these everyday words, and it
# says how to add devices: the chat fallback would otherwise answer "turn on the light" with a guess.
_ANY_DEVICE = ["light", "lights", "lamp", "fan", "thermostat", "heating", "heater", "blinds", "shades", "curtains",
               "door", "front door", "tv", "coffee machine", "plug", "switch"]  # fmt: skip
_ANY_ROOM = ["kitchen", "bedroom", "living room", "bathroom", "hallway", "office", "dining room", "garage"]
NO_DEVICES = (
    "I have no devices to control yet. Add each one to the assistant's config file as a home devices entry "
    "with an id, a name, a room and a kind, then ask me again."
)
_DEVICE = Enum(source=lambda env: env.home.names() or _ANY_DEVICE)
_ROOM = Enum(source=lambda env: env.home.rooms() or _ANY_ROOM)
_THE = "[the|my|all the|all]"
_WHERE = "[(in|on) the {room}]"
SLOTS = {"device": _DEVICE, "room": _ROOM}


def command_messages(devices: Sequence[Device], utterance: str) -> list[ChatMessage]:
    """The prompt for free phrasing; the adapter's training data (adapters/home) is built with it too."""
    listed = "; ".join(f"{d.name} ({d.kind}{', ' + d.room if d.room else ''})" for d in devices)
    return [
        ChatMessage(role="system", content=f"{SYSTEM_PROMPT} Devices: {listed}."),
        ChatMessage(role="user", content=utterance),
    ]


def _run(ctx: Context, action: str, value: float | None = None) -> Reply:
    if not ctx.home.devices:
        return Reply(text=NO_DEVICES)
    command = HomeCommand(device=ctx.slots["device"], action=action, value=value, room=ctx.slots.get("room"))  # type: ignore[arg-type]
    return _done(ctx.home.execute(command), command)


def _done(device: Device, command: HomeCommand) -> Reply:
    return Reply(text=describe(command, device), data={**command.model_dump(), "device": device.id})


def _on_off(verb: str) -> list[str]:
    return [
        f"(turn|switch|put) {verb} {_THE} [{{room}}] {{device}} {_WHERE}",
        f"(turn|switch|put) {_THE} [{{room}}] {{device}} {verb} {_WHERE}",
    ]


@skill.intent(
    "turn_on",
    templates=[*_on_off("on"), f"(light up|start) {_THE} [{{room}}] {{device}} {_WHERE}"],
    slots=SLOTS,
    examples=["switch on the bedroom fan", "could you put the lamp on"],
)
def turn_on(ctx: Context) -> Reply:
    """Switch a device on."""
    return _run(ctx, "turn_on")


@skill.intent(
    "turn_off",
    templates=[*_on_off("off"), f"(stop|kill) {_THE} [{{room}}] {{device}} {_WHERE}"],
    slots=SLOTS,
    examples=["shut off the coffee machine", "lights off in the bedroom"],
)
def turn_off(ctx: Context) -> Reply:
    """Switch a device off."""
    return _run(ctx, "turn_off")


@skill.intent(
    "set_level",
    templates=[
        f"(set|dim|turn|put|bring) {_THE} [{{room}}] {{device}} {_WHERE} to {{level}} [percent]",
        f"(dim|brighten) {_THE} [{{room}}] {{device}} {_WHERE} to {{level}} [percent]",
    ],
    slots={**SLOTS, "level": Number(minimum=0, maximum=100, required=True, prompt="To what level, in percent?")},
    examples=["bring the kitchen light down to forty percent", "fan at sixty percent"],
)
def set_level(ctx: Context) -> Reply:
    """Set a light, fan or blinds to a level in percent."""
    return _run(ctx, "set_level", ctx.slots["level"])


@skill.intent(
    "set_temperature",
    templates=[
        "(set|turn|put|change) [the] (thermostat|temperature|heating|heat) [{room}] [to] {temperature} "
        "[degrees] [celsius]",
        "make it {temperature} degrees [in here|in the {room}]",
    ],
    slots={"temperature": Number(minimum=5, maximum=35, required=True, prompt="To how many degrees?"), "room": _ROOM},
    examples=["heating to twenty degrees", "i'd like it at twenty two degrees"],
)
def set_temperature(ctx: Context) -> Reply:
    """Set the thermostat."""
    thermostats = [d for d in ctx.home.devices if d.kind == "thermostat"]
    if not ctx.home.devices:
        return Reply(text=NO_DEVICES)
    if not thermostats:
        return Reply(text="There is no thermostat configured.")
    ctx.slots.setdefault("device", thermostats[0].name)
    return _run(ctx, "set_temperature", ctx.slots["temperature"])


_REPORTED = {"on": "on", "off": "off", "locked": "locked", "unlocked": "unlocked", "open": "open",
             "closed": "closed", "opening": "opening", "closing": "closing"}  # fmt: skip


@skill.intent(
    "state",
    templates=[
        f"is {_THE} [{{room}}] {{device}} [still] {_WHERE} (on|off|locked|unlocked|open|closed|shut)",
        f"(what is|what's) the (state|status) of {_THE} [{{room}}] {{device}} {_WHERE}",
    ],
    slots=SLOTS,
    examples=["did i leave the porch light on", "is the front door still unlocked"],
    query=True,
)
def state(ctx: Context) -> Reply:
    """Say what a device last reported (the MQTT sink hears it; a file sink cannot)."""
    if not ctx.home.devices:
        return Reply(text=NO_DEVICES)
    if "device" not in ctx.slots:
        return Reply(text="Which device do you mean?")
    device, reported = ctx.home.state(ctx.slots["device"], ctx.slots.get("room"))
    if reported is None:
        return Reply(text=f"I can't tell: the {device.name} has not reported its state to me.")
    word = _REPORTED.get(reported.lower())
    said = word if word is not None else f"at {reported}"
    return Reply(text=f"The {device.name} is {said}.", data={"device": device.id, "state": reported})


@skill.intent(
    "open",
    templates=[f"(open|raise) {_THE} [{{room}}] {{device}} {_WHERE}"],
    slots=SLOTS,
    examples=["raise the shades", "open up the blinds in the living room"],
)
def open_(ctx: Context) -> Reply:
    """Open blinds."""
    return _run(ctx, "open")


@skill.intent(
    "close",
    templates=[f"(close|lower|shut) {_THE} [{{room}}] {{device}} {_WHERE}"],
    slots=SLOTS,
    examples=["lower the shades", "shut the blinds"],
)
def close(ctx: Context) -> Reply:
    """Close blinds."""
    return _run(ctx, "close")


@skill.intent(
    "lock",
    templates=[f"lock {_THE} [{{room}}] {{device}} {_WHERE}"],
    slots=SLOTS,
    examples=["lock up the front door", "lock the door for the night"],
)
def lock(ctx: Context) -> Reply:
    """Lock a door."""
    return _run(ctx, "lock")


@skill.intent(
    "unlock",
    templates=[f"unlock {_THE} [{{room}}] {{device}} {_WHERE}"],
    slots=SLOTS,
    examples=["unlock the front door", "the door needs unlocking"],
)
def unlock(ctx: Context) -> Reply:
    """Unlock a door."""
    return _run(ctx, "unlock")


@skill.intent(
    "command",
    examples=[
        "i can't see anything in the bedroom",
        "it's chilly in the hallway",
        "the lights are too harsh",
        "i'm sweating",
        "kill the lights",
        "let some light in",
        "shut everything off",
    ],  # fmt: skip
    slots=SLOTS,
    description="Any other request to change a device: lights, fan, thermostat, blinds, locks.",
)
def free_command(ctx: Context) -> Reply:
    """Turn free phrasing into a device command with the LLM."""
    if not ctx.home.devices:
        return Reply(text=NO_DEVICES)
    command = ctx.llm.json(command_messages(ctx.home.devices, ctx.utterance), HomeCommand)
    return _done(ctx.home.execute(command), command)
