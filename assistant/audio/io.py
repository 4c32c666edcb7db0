"""Microphone, speakers and WAV files.

sounddevice (PortAudio) is imported only when a live device is opened, so headless use and the
tests need no audio stack. Speakers share one small protocol: the voice loop queues sentences as
they are synthesized and stops them at once on barge-in.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import numpy as np

log = logging.getLogger("assistant.audio")

RATE = 16000  # what VAD, wake word and ASR consume
FRAME = 512  # 32 ms at 16 kHz: Silero's window, so every stage sees the same frames


class AudioError(RuntimeError):
    """No usable audio device or file; the message names it and says how to fix it."""


def to_int16(samples: np.ndarray) -> np.ndarray:
    """Float samples on the int16 scale, rounded and clipped instead of wrapped around."""
    return np.clip(np.rint(samples), -32768, 32767).astype(np.int16)


def resample(samples: np.ndarray, rate: int, to: int = RATE) -> np.ndarray:
    if rate == to:
        return samples.astype(np.int16, copy=False)
    import soxr

    out = soxr.resample(samples.astype(np.float32), rate, to)
    return to_int16(out)


def read_wav(path: str | Path, rate: int = RATE) -> np.ndarray:
    """Any file libsndfile reads (WAV, FLAC, OGG; any rate, depth, channel count) as mono int16 at `rate`."""
    import soundfile as sf

    p = Path(path)
    if not p.is_file():
        raise AudioError(f"audio file {p} does not exist")
    try:
        data, file_rate = sf.read(str(p), dtype="float32", always_2d=True)
    except (RuntimeError, sf.LibsndfileError) as e:
        raise AudioError(f"audio file {p} cannot be read: {e}") from e
    mono = np.clip(data.mean(axis=1) * 32767.0, -32768, 32767)  # float files may exceed full scale: clip, never wrap
    return resample(mono, file_rate, rate) if file_rate != rate else mono.astype(np.int16)


def write_wav(path: str | Path, samples: np.ndarray, rate: int) -> None:
    import soundfile as sf

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), samples.astype(np.int16), rate, subtype="PCM_16")


def frames(samples: np.ndarray, size: int = FRAME) -> Iterator[np.ndarray]:
    """Fixed-size frames; the last one is padded with silence."""
    for i in range(0, len(samples), size):
        chunk = samples[i : i + size]
        if len(chunk) < size:
            chunk = np.concatenate([chunk, np.zeros(size - len(chunk), dtype=np.int16)])
        yield chunk


def _sounddevice() -> Any:
    try:
        import sounddevice as sd
    except OSError as e:  # the PortAudio shared library is missing
        raise AudioError(
            f"sounddevice cannot load PortAudio ({e}); install it: `apt install libportaudio2` "
            "(Debian/Ubuntu) or your distribution's portaudio package"
        ) from e
    return sd


def _check_device(sd: Any, device: str | int | None, kind: str) -> None:
    if device is None:
        return
    try:
        sd.query_devices(device, kind)
    except (ValueError, sd.PortAudioError) as e:
        names = [f"{i}: {d['name']}" for i, d in enumerate(sd.query_devices())]
        raise AudioError(
            f"audio.{kind}_device = {device!r}: {e}. Devices: {'; '.join(names) or 'none'}. "
            f"Set audio.{kind}_device to one of them, or leave it empty for the system default."
        ) from e


class Microphone:
    """Live capture: blocks from PortAudio's thread go through a queue and come out as 16 kHz frames."""

    def __init__(
        self, device: str | int | None = None, rate: int = RATE, block_ms: int = 32, max_backlog_s: float = 10
    ):
        self.device, self.rate, self.block = device, rate, max(1, rate * block_ms // 1000)
        self._q: queue.Queue[np.ndarray | None] = queue.Queue(maxsize=max(4, int(max_backlog_s * 1000 / block_ms)))
        self._stream: Any = None
        self.dropped = 0  # blocks lost because the consumer fell behind by more than max_backlog_s
        self.started = threading.Event()  # set at the first callback (the first stream may take a second)

    def _callback(self, indata: np.ndarray, n: int, t: Any, status: Any) -> None:
        if status:
            log.debug("capture status: %s", status)
        self.started.set()
        try:
            self._q.put_nowait(indata[:, 0].copy())
        except queue.Full:
            self.dropped += 1

    def start(self) -> Microphone:
        sd = _sounddevice()
        _check_device(sd, self.device, "input")
        try:
            self._stream = sd.InputStream(
                device=self.device, channels=1, samplerate=self.rate, blocksize=self.block,
                dtype="int16", callback=self._callback,
            )  # fmt: skip
            self._stream.start()
        except sd.PortAudioError as e:
            raise AudioError(f"cannot open the microphone {self.device or '(default)'}: {e}") from e
        return self

    @property
    def backlog(self) -> int:
        """Blocks captured but not yet consumed: the ASR is behind when this grows."""
        return self._q.qsize()

    def frames(self) -> Iterator[np.ndarray]:
        """16 kHz frames until `stop()`."""
        import soxr

        rs = soxr.ResampleStream(self.rate, RATE, 1, dtype="int16") if self.rate != RATE else None
        pending = np.zeros(0, dtype=np.int16)
        while True:
            block = self._q.get()
            if block is None:
                return
            if rs is not None:
                block = rs.resample_chunk(block)
            pending = np.concatenate([pending, block])
            while len(pending) >= FRAME:
                yield pending[:FRAME]
                pending = pending[FRAME:]

    def stop(self) -> None:
        if self._stream is not None:
            self._stream.stop()
            self._stream.close()
            self._stream = None
        self._q.put(None)


class Speaker(Protocol):
    """Where reply audio goes. `play` queues and returns; `stop` silences at once (barge-in)."""

    def prepare(self, rate: int) -> None:
        """Open the output now, at the voice's rate, so the first reply does not wait for it."""
        ...

    def play(self, samples: np.ndarray, rate: int) -> None: ...

    def stop(self) -> None: ...

    def wait(self, timeout: float | None = None) -> bool: ...

    @property
    def playing(self) -> bool: ...


class BufferSpeaker:
    """Collects reply audio (for `--tts-out` and tests); nothing is ever 'playing'."""

    def __init__(self) -> None:
        self.chunks: list[np.ndarray] = []
        self.rate = 0

    def prepare(self, rate: int) -> None:
        pass

    def play(self, samples: np.ndarray, rate: int) -> None:
        self.rate = rate
        self.chunks.append(samples.astype(np.int16))

    def stop(self) -> None:
        pass

    def wait(self, timeout: float | None = None) -> bool:
        return True

    @property
    def playing(self) -> bool:
        return False

    def audio(self) -> np.ndarray:
        return np.concatenate(self.chunks) if self.chunks else np.zeros(0, dtype=np.int16)


class _QueuedSpeaker:
    """Shared queue logic: a consumer pulls blocks of `block_s` and plays them at their real rate."""

    block_s = 0.02

    def __init__(self) -> None:
        self._q: queue.Queue[tuple[np.ndarray, int]] = queue.Queue()
        self._current: tuple[np.ndarray, int] | None = None
        self._lock = threading.Lock()
        self._idle = threading.Event()
        self._idle.set()
        self.stopped_at: float | None = None

    def prepare(self, rate: int) -> None:
        pass

    def play(self, samples: np.ndarray, rate: int) -> None:
        with self._lock:
            self._idle.clear()
            self._q.put((samples.astype(np.int16), rate))

    def stop(self) -> None:
        with self._lock:
            while not self._q.empty():
                self._q.get_nowait()
            self._current = None
            self.stopped_at = time.monotonic()
            self._idle.set()

    def wait(self, timeout: float | None = None) -> bool:
        return self._idle.wait(timeout)

    @property
    def playing(self) -> bool:
        return not self._idle.is_set()

    def _next_block(self, n_for_rate: Any) -> tuple[np.ndarray, int] | None:
        """Up to one block of queued audio, or None when nothing is queued."""
        with self._lock:
            if self._current is None or len(self._current[0]) == 0:
                if self._q.empty():
                    self._current = None
                    self._idle.set()
                    return None
                self._current = self._q.get_nowait()
            samples, rate = self._current
            n = n_for_rate(rate)
            block, rest = samples[:n], samples[n:]
            self._current = (rest, rate)
            return block, rate


class PacedSpeaker(_QueuedSpeaker):
    """A virtual sound card: consumes audio at real-time speed and keeps what it played.

    Headless runs and tests use it where timing matters (barge-in must cut playback short).
    """

    def __init__(self) -> None:
        super().__init__()
        self.played: list[np.ndarray] = []
        self.rate = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="paced-speaker", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        next_t = time.monotonic()
        while not self._stop.is_set():
            got = self._next_block(lambda rate: int(rate * self.block_s))
            if got is None:
                time.sleep(self.block_s / 2)
                next_t = time.monotonic()
                continue
            block, self.rate = got
            self.played.append(block)
            next_t += len(block) / self.rate
            time.sleep(max(0.0, next_t - time.monotonic()))

    def played_s(self) -> float:
        return sum(len(b) for b in self.played) / self.rate if self.rate else 0.0

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=1)


class SoundDeviceSpeaker(_QueuedSpeaker):
    """The real speaker: a PortAudio output stream fed from the queue in its own callback."""

    def __init__(self, device: str | int | None = None):
        super().__init__()
        self.device = device
        self._sd = _sounddevice()
        _check_device(self._sd, device, "output")
        self._stream: Any = None
        self._rate = 0

    def prepare(self, rate: int) -> None:
        """The first stream of a process can take 0.6-1.7 s to start (measured on PulseAudio)."""
        if self._stream is None or rate != self._rate:
            self._open(rate)

    def play(self, samples: np.ndarray, rate: int) -> None:
        self.prepare(rate)
        super().play(samples, rate)

    def _open(self, rate: int) -> None:
        if self._stream is not None:
            self._stream.close()
        self._rate = rate
        try:
            self._stream = self._sd.OutputStream(
                device=self.device, channels=1, samplerate=rate, dtype="int16",
                blocksize=int(rate * self.block_s), callback=self._callback,
            )  # fmt: skip
            self._stream.start()
        except self._sd.PortAudioError as e:
            raise AudioError(f"cannot open the speaker {self.device or '(default)'}: {e}") from e

    def _callback(self, outdata: np.ndarray, n: int, t: Any, status: Any) -> None:
        out = outdata[:, 0]
        filled = 0
        while filled < n:
            want = n - filled
            got = self._next_block(lambda rate, want=want: want)
            if got is None:
                break
            block = got[0]
            out[filled : filled + len(block)] = block
            filled += len(block)
        out[filled:] = 0

    def close(self) -> None:
        if self._stream is not None:
            self._stream.close()
            self._stream = None
