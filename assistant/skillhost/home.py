"""Home control capability: device commands validated against the integrator's device list, sent to a sink.

Skills reach it as `ctx.home` (permission `home.control`), typed for them as `assistant.skills.HomeControl`.
The sink is pluggable: `jsonl` (default), `log`, or any `HomeSink` registered in the
`assistant.home_sinks` entry-point group.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from importlib.metadata import entry_points
from pathlib import Path
from typing import Protocol

from assistant.config.schema import HomeConfig, HomeDevice, state_dir
from assistant.skillhost.sandbox import as_framework
from assistant.skills.capabilities import HomeCommand, HomeError, describe

log = logging.getLogger("assistant.home")

ACTIONS_BY_KIND: dict[str, set[str]] = {
    "light": {"turn_on", "turn_off", "toggle", "set_level"},
    "switch": {"turn_on", "turn_off", "toggle"},
    "fan": {"turn_on", "turn_off", "toggle", "set_level"},
    "thermostat": {"turn_on", "turn_off", "set_temperature"},
    "blinds": {"open", "close", "set_level"},
    "lock": {"lock", "unlock"},
}
_VALUE_RANGE = {"set_level": (0.0, 100.0), "set_temperature": (5.0, 35.0)}


class HomeSink(Protocol):
    def send(self, device: HomeDevice, command: HomeCommand) -> None:
        """Deliver a checked command; a `HomeError` it raises is what the user hears."""
        ...

    def close(self) -> None: ...

    def state(self, device: HomeDevice) -> str | None:
        """What the device last reported (e.g. "ON"), or None when this sink hears nothing back."""
        ...


class JsonlSink:
    """Appends one JSON line per command; a home-automation bridge can tail the file."""

    def __init__(self, path: Path):
        self.path = path
        self._lock = threading.Lock()

    def send(self, device: HomeDevice, command: HomeCommand) -> None:
        record = {"ts": time.time(), "device": device.id, "action": command.action, "value": command.value}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._lock, self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")

    def state(self, device: HomeDevice) -> str | None:
        return None  # a file hears nothing back

    def close(self) -> None:
        pass


class LogSink:
    def send(self, device: HomeDevice, command: HomeCommand) -> None:
        log.info("home: %s %s %s", device.id, command.action, command.value)

    def state(self, device: HomeDevice) -> str | None:
        return None

    def close(self) -> None:
        pass


def _default_sink_path() -> Path:
    return state_dir() / "home.jsonl"


def make_sink(cfg: HomeConfig) -> HomeSink:
    if cfg.sink == "jsonl":
        return JsonlSink(cfg.sink_path or _default_sink_path())
    if cfg.sink == "log":
        return LogSink()
    if cfg.sink == "mqtt":
        from assistant.skillhost.mqtt import MqttSink

        return MqttSink(cfg.mqtt)
    found = [ep for ep in entry_points(group="assistant.home_sinks") if ep.name == cfg.sink]
    if not found:
        known = ", ".join(["jsonl", "log", "mqtt", *(ep.name for ep in entry_points(group="assistant.home_sinks"))])
        raise HomeError(f"home.sink '{cfg.sink}' is not installed (known sinks: {known})")
    factory = found[0].load()
    return factory(cfg) if callable(factory) else factory  # type: ignore[no-any-return]


class Home:
    """Resolves spoken device names to configured devices and checks each command before sending it."""

    def __init__(self, cfg: HomeConfig, sink: HomeSink | None = None):
        self.cfg = cfg
        self.devices = list(cfg.devices)
        self._sink = sink
        if sink is None and cfg.sink == "mqtt":
            self._sink = make_sink(cfg)  # at start: connected, and device states heard, before the first turn
        self.sent: list[tuple[HomeDevice, HomeCommand]] = []

    @property
    def sink(self) -> HomeSink:
        if self._sink is None:
            self._sink = make_sink(self.cfg)
        return self._sink

    def names(self) -> dict[str, str]:
        """Spoken name -> canonical name, for an enum slot."""
        out: dict[str, str] = {}
        for d in self.devices:
            for n in [d.name, *d.aliases]:
                out[n] = d.name
        return out

    def rooms(self) -> list[str]:
        return sorted({d.room for d in self.devices if d.room})

    def resolve(self, name: str, room: str | None = None) -> HomeDevice:
        key = name.strip().lower()
        matches = [d for d in self.devices if key in (d.id, d.name.lower(), *(a.lower() for a in d.aliases))] or [
            d for d in self.devices if d.room and f"{d.room} {d.name}".lower() == key
        ]
        if room:
            in_room = [d for d in matches if d.room and d.room.lower() == room.lower()]
            if not in_room and matches:
                raise HomeError(f"There is no {name} in the {room}.")
            matches = in_room
        if not matches:
            raise HomeError(f"I don't know a device called {name}.")
        if len(matches) > 1:
            rooms = " or the ".join(sorted(d.room or "?" for d in matches))
            raise HomeError(f"Which {name}: the {rooms}?")
        return matches[0]

    def execute(self, command: HomeCommand) -> HomeDevice:
        return self.send(self.check(command), command)

    def check(self, command: HomeCommand) -> HomeDevice:
        """The device the command is for, if the command fits it; else a `HomeError` fit to be spoken."""
        device = self.resolve(command.device, command.room)
        if command.action not in ACTIONS_BY_KIND[device.kind]:
            raise HomeError(f"The {device.name} can't {command.action.replace('_', ' ')}.")
        bounds = _VALUE_RANGE.get(command.action)
        if bounds is not None:
            if command.value is None:
                raise HomeError(f"To what value should I set the {device.name}?")
            if not bounds[0] <= command.value <= bounds[1]:
                raise HomeError(f"{command.value:g} is out of range for the {device.name}.")
        return device

    def send(self, device: HomeDevice, command: HomeCommand) -> HomeDevice:
        """Send a checked command."""
        as_framework(self._send, device, command)  # a network sink needs no permission of the skill
        self.sent.append((device, command))
        return device

    def _send(self, device: HomeDevice, command: HomeCommand) -> None:
        self.sink.send(device, command)  # the sink is made here, on first use: under the framework's permissions

    def state(self, name: str, room: str | None = None) -> tuple[HomeDevice, str | None]:
        """The device and what it last reported (None: the sink hears nothing back)."""
        device = self.resolve(name, room)
        return device, as_framework(self._state, device)

    def _state(self, device: HomeDevice) -> str | None:
        return self.sink.state(device)

    def close(self) -> None:
        if self._sink is not None:
            self._sink.close()


class ConfirmationNeeded(Exception):
    """A sensitive command the LLM chose: the host asks "Unlock the front door?" before it runs."""

    def __init__(self, command: HomeCommand, device: HomeDevice):
        super().__init__(describe(command, device, asking=True))
        self.command, self.device = command, device


class TurnHome:
    """`ctx.home` for one turn: the shared `Home`, but a sensitive command (an action in
    `home.confirm_actions`, or any action on a kind in `home.sensitive_kinds`) runs only when the
    turn's route was a clear one (a template match, or the answer to a question we asked)."""

    def __init__(self, home: Home, *, confirmed: bool):
        self._home, self.confirmed = home, confirmed

    @property
    def devices(self) -> list[HomeDevice]:
        return self._home.devices

    def names(self) -> dict[str, str]:
        return self._home.names()

    def rooms(self) -> list[str]:
        return self._home.rooms()

    def state(self, name: str, room: str | None = None) -> tuple[HomeDevice, str | None]:
        return self._home.state(name, room)

    def execute(self, command: HomeCommand) -> HomeDevice:
        device = self._home.check(command)  # a command that cannot run is refused, not asked about
        cfg = self._home.cfg
        if not self.confirmed and (command.action in cfg.confirm_actions or device.kind in cfg.sensitive_kinds):
            raise ConfirmationNeeded(command, device)
        return self._home.send(device, command)
