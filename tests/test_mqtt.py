"""The MQTT home sink against a real broker (Debian's mosquitto, started here on loopback)."""

from __future__ import annotations

import getpass
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from assistant.config import AssistantConfig
from assistant.pipeline import Assistant
from assistant.skillhost.mqtt import MqttSink
from tests.conftest import free_port

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
DEVICES = [
    {"id": "kitchen_light", "name": "light", "room": "kitchen", "kind": "light"},
    {"id": "front_door", "name": "front door", "kind": "lock"},
    {"id": "thermostat", "name": "thermostat", "kind": "thermostat"},
]


class Broker:
    """mosquitto on a loopback port, restartable on the same port with its sessions kept on disk."""

    def __init__(self, folder: Path):
        self.port = free_port()
        self.conf = folder / "mosquitto.conf"
        # As root, mosquitto would switch to its own user, which cannot write its sessions under pytest's folder.
        self.conf.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence true\n"
            f"persistence_location {folder}/\nautosave_interval 1\nuser {getpass.getuser()}\n"
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        assert Path(MOSQUITTO).is_file(), "mosquitto is missing: scripts/install.sh installs it with the test extra"
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.conf)], stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("mosquitto did not start")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()  # SIGTERM: it saves the sessions (and their queued messages) first
            self.proc.wait(10)
            self.proc = None


class Device:
    """The home side: a client with a persistent session that records commands and reports states."""

    def __init__(self, port: int):
        self.got: list[tuple[str, str]] = []
        self.arrived = threading.Condition()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="home-hub", clean_session=False)
        self.client.on_connect = lambda c, u, f, r, p: c.subscribe([("assistant/+/set", 1), ("assistant/+/+/set", 1)])
        self.client.on_message = self._on_message
        self.client.reconnect_delay_set(min_delay=1, max_delay=2)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def _on_message(self, client: object, userdata: object, message: mqtt.MQTTMessage) -> None:
        with self.arrived:
            self.got.append((message.topic, message.payload.decode()))
            self.arrived.notify_all()

    def wait(self, n: int, timeout: float = 15) -> list[tuple[str, str]]:
        with self.arrived:
            self.arrived.wait_for(lambda: len(self.got) >= n, timeout)
            return list(self.got)

    def report(self, device: str, state: str) -> None:
        self.client.publish(f"assistant/{device}/state", state, qos=1, retain=True).wait_for_publish(5)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    b = Broker(tmp_path)
    b.start()
    yield b
    b.stop()


def _assistant(port: int, **mqtt_cfg: object) -> Assistant:
    cfg = AssistantConfig.model_validate(
        {
            "profile": "small",
            "home": {"devices": DEVICES, "sink": "mqtt", "mqtt": {"port": port, "ack_timeout_s": 1.0, **mqtt_cfg}},
        }  # fmt: skip
    )
    return Assistant(cfg, None)


def _sink(assistant: Assistant) -> MqttSink:
    sink = assistant.runtime.home.sink
    assert isinstance(sink, MqttSink)
    return sink


@pytest.fixture
def home(broker: Broker) -> Iterator[tuple[Device, Assistant, MqttSink]]:
    """The device side and an assistant whose home sink talks to the broker."""
    hub, assistant = Device(broker.port), _assistant(broker.port)
    sink = _sink(assistant)
    yield hub, assistant, sink
    sink.close()
    hub.close()


def _until(predicate: object, timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.05)
    return False


def test_commands_reach_the_broker_in_home_assistants_payloads(home: tuple[Device, Assistant, MqttSink]) -> None:
    hub, assistant, sink = home
    assert assistant.ask("turn on the kitchen light").text == "Turning on the kitchen light."
    assert assistant.ask("lock the front door").text.startswith("Locking the front door")
    assistant.ask("set the thermostat to 21 degrees")
    assert hub.wait(3) == [
        ("assistant/kitchen_light/set", "ON"),
        ("assistant/front_door/set", "LOCK"),
        ("assistant/thermostat/temperature/set", "21"),
    ]
    assert sink.waiting == 0


def test_is_the_light_on_is_answered_from_what_the_device_reports(home: tuple[Device, Assistant, MqttSink]) -> None:
    hub, assistant, sink = home
    hub.report("kitchen_light", "OFF")
    light = assistant.runtime.home.resolve("light")
    assert _until(lambda: sink.state(light) == "OFF")
    reply = assistant.ask("is the kitchen light on")  # a question: it reads, it never acts
    assert reply.route.intent == "home.state" and reply.text == "The light is off.", reply
    hub.report("kitchen_light", "ON")
    assert _until(lambda: sink.state(light) == "ON")
    assert assistant.ask("is the light in the kitchen on?").text == "The light is on."
    assert hub.got == []  # nothing was sent by asking


def test_a_broker_that_is_down_or_restarts_loses_no_command(
    broker: Broker, home: tuple[Device, Assistant, MqttSink]
) -> None:
    hub, assistant, sink = home
    assistant.ask("turn on the kitchen light")
    assert hub.wait(1) == [("assistant/kitchen_light/set", "ON")]
    broker.stop()
    assert _until(lambda: not sink.connected)
    t0 = time.monotonic()
    reply = assistant.ask("turn off the kitchen light")  # the broker is gone mid-session
    assert time.monotonic() - t0 < 5, "a turn must not hang on the broker"
    assert "not answering" in reply.text and "as soon as it is back" in reply.text, reply.text
    assert reply.error is None and sink.waiting == 1
    broker.start()  # same port, same sessions: the hub's queue survives the restart
    assert _until(lambda: sink.waiting == 0, timeout=20), "the queued command was not re-sent"
    assert hub.wait(2, timeout=20) == [
        ("assistant/kitchen_light/set", "ON"),
        ("assistant/kitchen_light/set", "OFF"),
    ]
    time.sleep(2)  # once each: a command sent twice after a reconnect could end in the wrong state
    assert len(hub.got) == 2, hub.got


def test_a_sink_whose_broker_never_answers_says_so_at_once(tmp_path: Path) -> None:
    assistant = _assistant(free_port())  # nothing listens there
    try:
        reply = assistant.ask("turn on the kitchen light")
        assert "not answering" in reply.text and reply.error is None
        assert assistant.ask("is the kitchen light on").text == (
            "I can't tell: the light has not reported its state to me."
        )
    finally:
        _sink(assistant).close()


def test_mqtt_topics_must_name_the_device_once() -> None:
    from assistant.config import ConfigError
    from assistant.config.loader import validate_config

    for topic in ["assistant/set", "assistant/{device}_light/set", "assistant/+/{device}"]:
        with pytest.raises(ConfigError, match=r"home\.mqtt\.command_topic.*device placeholder exactly once"):
            validate_config({"home": {"mqtt": {"command_topic": topic}}}, source="t.toml", base_dir=None)
