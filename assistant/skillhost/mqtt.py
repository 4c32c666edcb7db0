"""The MQTT home sink (`home.sink = "mqtt"`): commands to a broker, device state from it.

Topics follow Home Assistant's MQTT conventions: a device's `command_topic` takes `ON`/`OFF`,
`LOCK`/`UNLOCK`, `OPEN`/`CLOSE`; levels and temperatures go to their own topics as plain numbers;
`state_topic` carries what the device reports (retained), so "is the kitchen light on" is answered
from the device, not from what we last sent. Every topic is a template with `{device}` (the id).

Nothing is lost while the broker is down or restarting: paho keeps each command until the broker
acknowledges it (QoS 1) and sends it again, in order and once, after every reconnect; the turn says
so when the acknowledgement does not come in time (`HomeQueued`), and a late delivery is logged.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from typing import Any

from assistant.config.schema import HomeDevice, MqttConfig
from assistant.skills.capabilities import HomeCommand, HomeError

log = logging.getLogger("assistant.home")
PASSWORD_ENV = "ASSISTANT_MQTT_PASSWORD"
_PAYLOAD = {"turn_on": "ON", "turn_off": "OFF", "lock": "LOCK", "unlock": "UNLOCK", "open": "OPEN", "close": "CLOSE"}


class HomeQueued(HomeError):
    """The broker did not acknowledge in time: the command stays queued and goes out when it is back."""


@dataclass
class _Pending:
    topic: str
    payload: str
    device: str
    told: bool = False  # the user already heard that it is queued


class MqttSink:
    def __init__(self, cfg: MqttConfig):
        try:
            import paho.mqtt.client as mqtt
        except ImportError as e:
            raise HomeError("home.sink = 'mqtt' needs paho-mqtt: pip install paho-mqtt") from e
        self.cfg = cfg
        self._lock = threading.Condition()
        self._pending: dict[int, _Pending] = {}  # by message id, until the broker acknowledges it
        self._early_acks: set[int] = set()  # acknowledged before `send` noted the id
        self._connected = False
        self._was_connected = False
        self._states: dict[str, str] = {}
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=cfg.client_id, clean_session=True)
        password = cfg.password.get_secret_value() if cfg.password is not None else os.environ.get(PASSWORD_ENV)
        if cfg.username is not None:
            client.username_pw_set(cfg.username, password)
        if cfg.tls:
            client.tls_set(ca_certs=str(cfg.ca_file) if cfg.ca_file is not None else None)
        client.reconnect_delay_set(min_delay=1, max_delay=5)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_publish = self._on_publish
        self._client = client
        client.connect_async(cfg.host, cfg.port, keepalive=cfg.keepalive_s)
        client.loop_start()  # connects, and reconnects, in paho's own thread

    # --- paho callbacks (its network thread) ---------------------------------------------

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        if reason.is_failure:
            log.error("home.mqtt: %s:%d refused the connection: %s (check home.mqtt.username and password)",
                      self.cfg.host, self.cfg.port, reason)  # fmt: skip
            return
        with self._lock:
            self._connected = self._was_connected = True
            self._early_acks.clear()
            waiting = len(self._pending)
        # paho sends what it holds unacknowledged (ours included) once this returns, in order, once each.
        log.info("home.mqtt: connected to %s:%d; %d commands go out now", self.cfg.host, self.cfg.port, waiting)
        client.subscribe(self.cfg.state_topic.format(device="+"), qos=1)

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        with self._lock:
            self._connected = False
            waiting = len(self._pending)
        log.warning("home.mqtt: disconnected from %s:%d (%s); %d commands wait for it",
                    self.cfg.host, self.cfg.port, reason, waiting)  # fmt: skip

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        pattern = self.cfg.state_topic.split("/")
        parts = message.topic.split("/")
        if len(parts) != len(pattern):
            return
        device = parts[pattern.index("{device}")]
        with self._lock:
            self._states[device] = message.payload.decode("utf-8", "replace").strip()

    def _on_publish(self, client: Any, userdata: Any, mid: int, reason: Any, properties: Any) -> None:
        with self._lock:
            pending = self._pending.pop(mid, None)
            if pending is None:
                self._early_acks.add(mid)
                return
            if pending.told:
                log.info("home.mqtt: the queued command for %s went out: %s %s", pending.device, pending.topic,
                         pending.payload)  # fmt: skip
            self._lock.notify_all()

    def message(self, device: HomeDevice, command: HomeCommand) -> tuple[str, str]:
        """(topic, payload) for a checked command."""
        fmt = {"device": device.id}
        if command.action in _PAYLOAD:
            return self.cfg.command_topic.format(**fmt), _PAYLOAD[command.action]
        if command.action == "toggle":
            on = (self.state(device) or "").upper() == "ON"
            return self.cfg.command_topic.format(**fmt), "OFF" if on else "ON"
        value = f"{command.value:g}" if command.value is not None else ""
        if command.action == "set_temperature":
            return self.cfg.temperature_topic.format(**fmt), value
        return self.cfg.level_topic.format(**fmt), value  # set_level

    def send(self, device: HomeDevice, command: HomeCommand) -> None:
        topic, payload = self.message(device, command)
        # Handed to paho exactly once: it keeps a QoS 1/2 message until the broker acknowledges it,
        # also while disconnected, and sends it again (same id, same order) after each reconnect.
        info = self._client.publish(topic, payload, qos=self.cfg.qos)
        with self._lock:
            if info.mid in self._early_acks:
                self._early_acks.discard(info.mid)
                return
            self._pending[info.mid] = _Pending(topic, payload, device.id)
            down = self._was_connected and not self._connected  # known to be down: no point waiting
            if not down and self._lock.wait_for(lambda: info.mid not in self._pending, self.cfg.ack_timeout_s):
                return
            if info.mid not in self._pending:
                return
            self._pending[info.mid].told = True
        log.warning("home.mqtt: no acknowledgement for %s %s: queued until the broker is back", topic, payload)
        raise HomeQueued(
            "The home hub is not answering right now. "
            f"I'll send the command for the {device.name} as soon as it is back."
        )

    def state(self, device: HomeDevice) -> str | None:
        with self._lock:
            return self._states.get(device.id)

    @property
    def connected(self) -> bool:
        with self._lock:
            return self._connected

    @property
    def waiting(self) -> int:
        """Commands the broker has not acknowledged yet."""
        with self._lock:
            return len(self._pending)

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()
