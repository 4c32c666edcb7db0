"""hibari (Apache-2.0): an English voice distilled from Kokoro-82M, 24 kHz, on ONNX Runtime, no espeak.

Only the voice inside the wheel ('heart') is used: hibari's other voices download on first use, and
the device has no network. The model file is checked by the model store (`models/hibari-heart.toml`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from assistant.tts.base import TtsError, gain


class HibariSynthesizer:
    def __init__(self, model: Path, volume: float = 1.0, *, threads: int = 1):
        try:
            from hibari import SAMPLE_RATE, Hibari
        except ImportError as e:
            raise TtsError("tts.engine = 'hibari' needs hibari-tts: pip install hibari-tts") from e
        try:
            self._tts = Hibari(model=str(model), threads=threads)
        except Exception as e:  # onnxruntime raises its own types on a corrupt file
            raise TtsError(f"hibari voice {model} cannot be loaded: {e}") from e
        self.rate = int(SAMPLE_RATE)
        self.volume = volume
        self.synthesize("Hello.")  # the first call costs ~0.3 s more (measured): not in the first reply

    def synthesize(self, text: str) -> np.ndarray:
        """The same text gives the same audio (a fixed seed for the model's noise component)."""
        audio = np.asarray(self._tts(text, seed=0), dtype=np.float32)
        return gain(np.clip(audio * 32767.0, -32768, 32767).astype(np.int16), self.volume)
