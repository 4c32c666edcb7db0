"""Spoken replies: espeak-ng (default, from a wheel), Piper or hibari, sentence by sentence."""

from __future__ import annotations

from assistant.config.schema import TtsConfig
from assistant.modelstore import ModelError, ModelStore
from assistant.tts.base import SentenceSplitter, Synthesizer, TtsError

__all__ = ["SentenceSplitter", "Synthesizer", "TtsError", "load_tts"]


def load_tts(cfg: TtsConfig, models: ModelStore | None = None) -> Synthesizer:
    """The configured voice; `models` checks the hibari voice file (the default store when None)."""
    if cfg.resolved_engine == "hibari":
        from assistant.tts.hibari import HibariSynthesizer

        store = models or ModelStore()
        try:
            folder = store.prepare(store.get("hibari-heart"))
        except ModelError as exc:
            raise TtsError(f"tts.engine = 'hibari': {exc}") from exc
        return HibariSynthesizer(folder / "hibari.onnx", cfg.volume)
    if cfg.resolved_engine == "piper":
        from assistant.tts.piper import PiperSynthesizer

        return PiperSynthesizer(cfg.voice, cfg.piper_model, cfg.volume)
    from assistant.tts.espeak import EspeakSynthesizer

    return EspeakSynthesizer(cfg.voice, cfg.rate_wpm, cfg.volume)
