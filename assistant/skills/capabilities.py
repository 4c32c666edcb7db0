"""What a handler reaches through its `Context` besides plain data: `ctx.llm` and `ctx.home`.

They are protocols, so a skill depends on what the capabilities offer, not on the host that
implements them (`assistant.skillhost`). Also the home command a skill builds and the device
it gets back.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, Protocol, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from assistant.engine.types import ChatMessage

M = TypeVar("M", bound=BaseModel)
Action = Literal["turn_on", "turn_off", "toggle", "set_level", "set_temperature", "open", "close", "lock", "unlock"]


class HomeCommand(BaseModel):
    """One device command, as the LLM or a template produces it."""

    model_config = ConfigDict(extra="forbid")

    device: str = Field(min_length=1, description="Device id, name or alias.")
    action: Action
    value: float | None = Field(None, description="Percent for set_level, degrees Celsius for set_temperature.")
    room: str | None = None


_DOING = {"turn_on": "Turning on", "turn_off": "Turning off", "toggle": "Toggling", "open": "Opening",
          "close": "Closing", "lock": "Locking", "unlock": "Unlocking"}  # fmt: skip
_ASK = {"turn_on": "Turn on", "turn_off": "Turn off", "toggle": "Toggle", "open": "Open", "close": "Close",
        "lock": "Lock", "unlock": "Unlock", "set_level": "Set", "set_temperature": "Set"}  # fmt: skip


def spoken_name(device: Device) -> str:
    """'kitchen light' for a light in the kitchen, 'front door' for one whose name says its place."""
    return f"{device.room} {device.name}" if device.room and device.room not in device.name else device.name


def describe(command: HomeCommand, device: Device, *, asking: bool = False) -> str:
    """The spoken line for a command: 'Unlocking the front door.', or with `asking` 'Unlock the front door?'."""
    name = spoken_name(device)
    if command.action in ("set_level", "set_temperature"):
        unit = "percent" if command.action == "set_level" else "degrees"
        what = f"the {name} to {command.value:g} {unit}"
        return f"Set {what}?" if asking else f"Setting {what}."
    return f"{_ASK[command.action]} the {name}?" if asking else f"{_DOING[command.action]} the {name}."


class HomeError(Exception):
    """A command that does not fit the configured devices; the message is fit to be spoken."""


class Device(Protocol):
    """A device the integrator configured (`[[home.devices]]`), as a skill sees it."""

    @property
    def id(self) -> str: ...

    @property
    def name(self) -> str: ...

    @property
    def room(self) -> str | None: ...

    @property
    def kind(self) -> str: ...  # light, switch, fan, thermostat, blinds or lock

    @property
    def aliases(self) -> Sequence[str]: ...


class HomeControl(Protocol):
    """`ctx.home` (permission `home.control`); also `env.home` in an `Enum` slot's `source`."""

    @property
    def devices(self) -> Sequence[Device]: ...

    def names(self) -> dict[str, str]:
        """Spoken name -> canonical name, for an enum slot."""
        ...

    def rooms(self) -> list[str]: ...

    def execute(self, command: HomeCommand) -> Device:
        """Checks the command against the configured devices and sends it; raises `HomeError` if it does not fit."""
        ...

    def state(self, name: str, room: str | None = None) -> tuple[Device, str | None]:
        """The device and what it last reported ("ON", "LOCKED", "open", "21.5"), or None when the
        sink hears nothing back; raises `HomeError` for an unknown or ambiguous name."""
        ...


class LLM(Protocol):
    """`ctx.llm` (permission `llm`): the shared model, with the skill's adapter and system prompt."""

    def chat(self, text: str, *, system: str | None = None, history: bool = True, max_tokens: int | None = None) -> str:
        """Answer in spoken style, streaming each cleaned piece to the listener; returns what was said."""
        ...

    def complete(
        self,
        prompt: str | Sequence[ChatMessage],
        *,
        max_tokens: int = 64,
        grammar: str | None = None,
        stop: Sequence[str] = (),
    ) -> str:
        """Raw text, not spoken and not streamed (e.g. for a translation the handler post-processes)."""
        ...

    def json(self, prompt: str | Sequence[ChatMessage], model: type[M], *, max_tokens: int = 96) -> M:
        """An instance of `model`, generated under a grammar of its JSON schema and validated."""
        ...
