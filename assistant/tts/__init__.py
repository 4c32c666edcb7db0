"""Spoken replies: espeak-ng (default, from a wheel) or Piper, sentence by sentence."""

from __future__ import annotations

from assistant.config.schema import TtsConfig
from assistant.tts.base import SentenceSplitter, Synthesizer, TtsError

__all__ = ["SentenceSplitter", "Synthesizer", "TtsError", "load_tts"]


def load_tts(cfg: TtsConfig) -> Synthesizer:
    if cfg.engine == "piper":
        from assistant.tts.piper import PiperSynthesizer

        return PiperSynthesizer(cfg.voice, cfg.piper_model, cfg.volume)
    from assistant.tts.espeak import EspeakSynthesizer

    return EspeakSynthesizer(cfg.voice, cfg.rate_wpm, cfg.volume)
