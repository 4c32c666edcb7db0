"""The voice loop on a real PortAudio input stream: a PulseAudio null sink as the sound card.

What a "user" plays into the sink comes back from its monitor source, which the microphone reads
in real time (FACTS.md, recipe B). The assistant's reply goes into the same sink, so the loop also
hears itself, as on a device without echo cancellation. Skips, saying why, where the audio stack
cannot be started (scripts/test.sh installs it when run as root).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from assistant.audio import RATE, AudioError, Microphone, SoundDeviceSpeaker
from assistant.config import load_config
from assistant.pipeline import Assistant
from assistant.voice import VoiceLoop
from assistant.voice.build import build_voice
from tests.voice_audio import speech

INSTALL = "apt-get install pulseaudio libasound2-plugins libportaudio2 (scripts/test.sh does it as root)"


@pytest.fixture
def null_sink(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    if shutil.which("pulseaudio") is None:
        pytest.skip(f"PulseAudio is not installed: {INSTALL}")
    runtime = tmp_path / "pulse-runtime"
    runtime.mkdir(mode=0o700)
    env = {**os.environ, "XDG_RUNTIME_DIR": str(runtime), "HOME": str(tmp_path)}
    daemon = subprocess.Popen(
        [
            "pulseaudio",
            "-n",
            "--daemonize=no",
            "--exit-idle-time=-1",
            "--use-pid-file=no",
            "-L",
            "module-native-protocol-unix auth-anonymous=1",
            "-L",
            f"module-null-sink sink_name=vsink rate={RATE} channels=1 format=s16le",
            "-L",
            "module-always-sink",
        ],  # fmt: skip
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    socket = runtime / "pulse" / "native"
    deadline = time.monotonic() + 10
    while not socket.exists() and daemon.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    if not socket.exists():
        daemon.kill()
        _, err = daemon.communicate(timeout=5)
        pytest.skip(f"PulseAudio did not start: {err.decode(errors='replace')[-300:]}")
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
    monkeypatch.setenv("PULSE_SERVER", f"unix:{socket}")
    monkeypatch.setenv("PULSE_SINK", "vsink")
    monkeypatch.setenv("PULSE_SOURCE", "vsink.monitor")
    try:
        import sounddevice as sd
    except OSError as e:  # PortAudio itself is missing
        pytest.skip(f"{e}: {INSTALL}")
    if not any(d["name"] == "pulse" for d in sd.query_devices()):
        pytest.skip(f"PortAudio has no 'pulse' device (ALSA's pulse plugin is missing): {INSTALL}")
    try:
        yield
    finally:
        daemon.terminate()
        daemon.wait(timeout=5)


def _echo(loop: VoiceLoop, heard: list[tuple[float, np.ndarray]]) -> bool:
    """The reply's audio came back through the sink's monitor."""
    start = loop.traces[0].first_audio if loop.traces else None
    echo = [f for t, f in heard if start is not None and t > start]
    return bool(echo) and int(np.abs(np.concatenate(echo)).max()) > 1000


def test_wake_word_and_command_through_a_live_input_stream(null_sink: None) -> None:
    assistant = Assistant(load_config(), None)
    mic = Microphone("pulse")
    mouth = SoundDeviceSpeaker("pulse")  # the user
    speaker = SoundDeviceSpeaker("pulse")  # the assistant
    loop = build_voice(assistant, speaker, wake_word=True)
    heard: list[tuple[float, np.ndarray]] = []

    def capture() -> None:
        for frame in mic.frames():
            heard.append((time.monotonic(), frame))
            loop.feed(frame)
            loop.backlog(mic.backlog)

    try:
        mic.start()
        assert mic.started.wait(10), "the input stream never delivered audio"
        feeder = threading.Thread(target=capture, name="capture", daemon=True)
        feeder.start()
        audio, _ = speech("hey computer, what is two plus two", "piper", lead_s=0.3, tail_s=0.2)
        mouth.play(audio, RATE)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not (loop.traces and loop.state == "idle" and _echo(loop, heard)):
            time.sleep(0.05)
    except AudioError as e:
        pytest.skip(f"the virtual sound card cannot be opened: {e}")
    finally:
        mic.stop()
        loop.close()
        mouth.close()
        speaker.close()
    assert loop.traces, "nothing was recognized from the live stream"
    trace = loop.traces[0]
    assert trace.woke_by == "wake_word" and trace.intent == "calculator.calculate", trace
    assert "4" in trace.reply and trace.first_audio is not None
    # The reply went out through the sink and came back into the microphone; the loop did not take it
    # for a new command.
    assert _echo(loop, heard)
    assert len(loop.traces) == 1 and mic.dropped == 0
