"""Assemble a voice loop from the configuration."""

from __future__ import annotations

from assistant.asr import load_recognizer, load_spotter
from assistant.audio import Endpointer, Speaker, load_vad
from assistant.modelstore import ModelStore
from assistant.pipeline import Assistant
from assistant.tts import load_tts
from assistant.voice.commands import voice_corpus
from assistant.voice.loop import VoiceLoop


def build_voice(
    assistant: Assistant, speaker: Speaker, *, wake_word: bool | None = None, learn: bool = True
) -> VoiceLoop:
    """Loads the recognizer, VAD, spotter and voice once; `wake_word` overrides the config. `learn`:
    the live loop keeps what it learns of the microphone; a file run (`ask --wav`) only reads it, so
    the same file gives the same transcript every time."""
    cfg = assistant.cfg
    if wake_word is not None and wake_word != cfg.wake_word.enabled:
        cfg = cfg.model_copy(update={"wake_word": cfg.wake_word.model_copy(update={"enabled": wake_word})})
    recognizer = load_recognizer(cfg, voice_corpus(cfg, assistant.router))
    spotter = load_spotter(cfg, learn=learn) if cfg.wake_word.enabled or cfg.wake_word.stop_phrases else None
    tts = load_tts(cfg.tts, ModelStore.from_config(cfg))
    return VoiceLoop(assistant, recognizer, Endpointer(load_vad(cfg.vad), cfg.vad), tts, speaker, spotter, cfg=cfg)
