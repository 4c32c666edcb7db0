"""The Wyoming server driven by the `wyoming` client library, as Home Assistant drives it: describe, audio
in -> transcript, text -> handled reply, text -> audio, wake detection on a stream, and a full voice turn
whose command reaches a real MQTT broker (mosquitto on loopback)."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from wyoming.asr import Transcribe, Transcript
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.client import AsyncTcpClient
from wyoming.event import Event, Eventable
from wyoming.handle import Handled, NotHandled
from wyoming.info import Describe, Info
from wyoming.tts import Synthesize
from wyoming.wake import Detect, Detection

from assistant.audio import RATE, resample
from assistant.config import AssistantConfig
from assistant.engine import Engine
from assistant.pipeline import Assistant
from assistant.serve import WyomingServer
from tests.conftest import free_port
from tests.test_cli import ASSISTANT
from tests.test_mqtt import DEVICES, Broker, Device
from tests.voice_audio import speech, voice


def _config(**extra: object) -> AssistantConfig:
    return AssistantConfig.model_validate({"profile": "small", "wyoming": {"port": free_port()}, **extra})


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    b = Broker(tmp_path_factory.mktemp("broker"))
    b.start()
    yield b
    b.stop()


@pytest.fixture(scope="module")
def server(engine: Engine, broker: Broker) -> Iterator[WyomingServer]:
    """The assistant (small model, the home's devices on the MQTT broker) behind a Wyoming server."""
    cfg = _config(home={"devices": DEVICES, "sink": "mqtt", "mqtt": {"port": broker.port}})
    assistant = Assistant(cfg, engine)
    srv = WyomingServer(assistant)
    srv.start()
    yield srv
    srv.stop()
    assistant.runtime.close()


def _exchange(port: int, events: list[Eventable], done: Callable[[Event], bool], timeout: float = 60) -> list[Event]:
    """Send the events on one connection, then read until `done` says the answer is complete."""

    async def talk() -> list[Event]:
        async with AsyncTcpClient("127.0.0.1", port) as client:
            for e in events:
                await client.write_event(e.event())
            got: list[Event] = []
            while True:
                event = await asyncio.wait_for(client.read_event(), timeout)
                if event is None:
                    return got
                got.append(event)
                if done(event):
                    return got

    return asyncio.run(talk())


def _audio_events(audio: np.ndarray, rate: int, chunk_s: float = 0.1) -> list[Eventable]:
    n = int(rate * chunk_s)
    chunks: list[Eventable] = [
        AudioChunk(rate=rate, width=2, channels=1, audio=audio[i : i + n].tobytes(), timestamp=i * 1000 // rate)
        for i in range(0, len(audio), n)
    ]
    return [AudioStart(rate=rate, width=2, channels=1), *chunks, AudioStop()]


def _transcribe(port: int, audio: np.ndarray, rate: int) -> str:
    events = _exchange(
        port, [Transcribe(language="en"), *_audio_events(audio, rate)], lambda e: e.type in ("transcript", "error")
    )
    assert Transcript.is_type(events[-1].type), events
    return Transcript.from_event(events[-1]).text


def _synthesize(port: int, text: str) -> tuple[np.ndarray, int]:
    events = _exchange(port, [Synthesize(text=text)], lambda e: AudioStop.is_type(e.type) or e.type == "error")
    assert AudioStart.is_type(events[0].type) and AudioStop.is_type(events[-1].type), [e.type for e in events]
    chunks = [AudioChunk.from_event(e) for e in events if AudioChunk.is_type(e.type)]
    assert chunks and all(c.width == 2 and c.channels == 1 for c in chunks)
    return np.frombuffer(b"".join(c.audio for c in chunks), np.int16), chunks[0].rate


def _handle(port: int, text: str) -> Event:
    events = _exchange(port, [Transcript(text=text)], lambda e: e.type in ("handled", "not-handled", "error"))
    return events[-1]


def test_it_describes_its_services(server: WyomingServer) -> None:
    info = Info.from_event(_exchange(server.cfg.port, [Describe()], lambda e: Info.is_type(e.type))[-1])
    assert [p.name for p in info.asr] == ["assistant-asr"] and info.asr[0].models[0].languages == ["en"]
    assert [p.name for p in info.tts] == ["assistant-tts"] and info.tts[0].voices[0].installed
    assert [p.name for p in info.handle] == ["assistant-skills"] and info.handle[0].supports_home_control
    assert [m.phrase for m in info.wake[0].models] == ["hey computer"]
    assert all(p.installed and p.version for p in [*info.asr, *info.tts, *info.handle, *info.wake])


def test_audio_in_gives_the_transcript_at_any_sample_rate(server: WyomingServer) -> None:
    audio, _ = speech("set a timer for five minutes", "piper")
    assert _transcribe(server.cfg.port, audio, RATE) == "set a timer for five minutes"
    # Home Assistant's satellites send 16 kHz, but a client may send what its microphone gives.
    assert _transcribe(server.cfg.port, resample(audio, RATE, 48000), 48000) == "set a timer for five minutes"
    # Open speech (no command) comes from the neural pass.
    audio, _ = speech("why is the sky blue", "piper")
    assert "sky blue" in _transcribe(server.cfg.port, audio, RATE).lower()


def test_text_in_gives_the_handled_reply_and_unknowns_are_not_handled(server: WyomingServer) -> None:
    event = _handle(server.cfg.port, "what is seven times eight")
    assert Handled.is_type(event.type) and "56" in (Handled.from_event(event).text or "")
    event = _handle(server.cfg.port, "")
    assert NotHandled.is_type(event.type) or Handled.is_type(event.type)  # an empty text is answered, not a crash


def test_text_in_gives_speech_out_that_our_recognizer_hears_back(server: WyomingServer) -> None:
    audio, rate = _synthesize(server.cfg.port, "The kitchen light is on. Set a timer for ten seconds.")
    assert len(audio) / rate > 2.0
    heard = _transcribe(server.cfg.port, audio, rate)  # the reply is intelligible (the same recognizer)
    assert "kitchen light" in heard.lower() and "timer" in heard.lower(), heard


def test_the_wake_word_is_detected_on_a_stream_and_nothing_else_is(server: WyomingServer) -> None:
    wake, _ = speech("hey computer", "piper", tail_s=0.5)
    command, _ = speech("turn on the kitchen light", "piper")
    stream = np.concatenate([command, wake, command])

    def ended(e: Event) -> bool:
        return e.type in ("detection", "not-detected", "error")

    events = _exchange(server.cfg.port, [Detect(names=["hey_computer"]), *_audio_events(stream, RATE)], ended)
    detections = [Detection.from_event(e) for e in events if Detection.is_type(e.type)]
    assert [d.name for d in detections] == ["hey_computer"], [e.type for e in events]
    assert detections[0].timestamp is not None and len(command) * 1000 // RATE <= detections[0].timestamp
    events = _exchange(server.cfg.port, [Detect(), *_audio_events(command, RATE)], ended)
    assert [e.type for e in events] == ["not-detected"]


def test_a_home_assistant_voice_turn_reaches_the_broker_and_speaks_the_reply(
    server: WyomingServer, broker: Broker
) -> None:
    hub = Device(broker.port)
    try:
        piper = voice("piper")
        # At the voice's own rate (22.05 kHz), with the pre-roll and trailing silence a satellite's VAD keeps.
        quiet = np.zeros(piper.rate // 2, np.int16)
        said = np.concatenate([quiet, piper.synthesize("turn on the kitchen light"), quiet])
        text = _transcribe(server.cfg.port, said, piper.rate)
        assert text == "turn on the kitchen light"  # the command grammar's words
        event = _handle(server.cfg.port, text)
        assert Handled.is_type(event.type), event
        reply = Handled.from_event(event).text or ""
        assert ("assistant/kitchen_light/set", "ON") in hub.wait(1)
        audio, rate = _synthesize(server.cfg.port, reply)
        assert len(audio) / rate > 0.5 and np.abs(audio).max() > 1000
    finally:
        hub.close()


def test_a_bad_request_gets_an_error_and_still_the_closing_event_and_the_server_goes_on(server: WyomingServer) -> None:
    # 16-bit audio of an odd number of bytes cannot be read as samples. Home Assistant reads an ASR job until its
    # transcript (and a TTS job until audio-stop): a failed job must still end with it, or the pipeline hangs.
    odd = AudioChunk(rate=RATE, width=2, channels=1, audio=b"\x00" * 1025)
    events = _exchange(server.cfg.port, [Transcribe(), AudioStart(rate=RATE, width=2, channels=1), odd, AudioStop()],
                       lambda e: Transcript.is_type(e.type))  # fmt: skip
    assert [e.type for e in events] == ["error", "transcript"] and "audio-chunk" in events[0].data["text"]
    assert Transcript.from_event(events[-1]).text == ""
    assert _handle(server.cfg.port, "what is two plus two").type == "handled"  # the next job is served
    assert _transcribe(server.cfg.port, speech("what time is it", "piper")[0], RATE) == "what time is it"


def test_speech_right_after_the_start_keeps_its_first_syllables(server: WyomingServer) -> None:
    # A satellite streams right after its wake word: little or no silence before the speech.
    for said in ("set a timer for five minutes", "turn on the kitchen light"):
        for lead_s in (0.1, 0.3, 0.4):
            audio, _ = speech(said, "piper", lead_s=lead_s)
            assert _transcribe(server.cfg.port, audio, RATE) == said, lead_s


def test_only_allowed_clients_are_served(engine: Engine, tmp_path: Path) -> None:
    cfg = _config(wyoming={"port": free_port(), "allowed_clients": ["10.9.9.9"]})
    srv = WyomingServer(Assistant(cfg, engine))
    srv.start()
    try:
        try:
            got = _exchange(srv.cfg.port, [Describe()], lambda e: True, timeout=10)
        except ConnectionError:  # closed before the request was read
            got = []
        assert got == []  # closed, unanswered
    finally:
        srv.stop()
    with pytest.raises(ValueError, match="no password or token"):
        AssistantConfig.model_validate({"wyoming": {"host": "0.0.0.0"}})


def test_the_cli_serves_until_interrupted(tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "ASSISTANT_PROFILE": "small"}
    cmd = [ASSISTANT, "serve", "--wyoming", "--port", str(port)]
    log = tmp_path / "serve.log"  # a file, not a pipe: a chatty child never blocks on a full pipe
    proc = subprocess.Popen(cmd, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.2)
        info = Info.from_event(_exchange(port, [Describe()], lambda e: Info.is_type(e.type))[-1])
        assert info.handle and info.asr
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert f"tcp://127.0.0.1:{port}" in log.read_text()
