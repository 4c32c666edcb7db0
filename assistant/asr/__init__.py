"""Speech recognition: a small `Recognizer` protocol with Vosk and PocketSphinx behind it, plus
keyphrase spotting for the wake word and barge-in.

`load_recognizer` builds the command grammar from the router's phrases once at start.
"""

from __future__ import annotations

from pathlib import Path

from assistant.asr.base import AsrError, Recognition, Recognizer, Spot, Spotter, Transcript, Word
from assistant.asr.grammar import accept, command_corpus
from assistant.config.schema import AssistantConfig
from assistant.router import Router

__all__ = [
    "AsrError",
    "Recognition",
    "Recognizer",
    "Spot",
    "Spotter",
    "Transcript",
    "Word",
    "accept",
    "command_corpus",
    "load_recognizer",
    "load_spotter",
]


def load_recognizer(cfg: AssistantConfig, router: Router) -> Recognizer:
    wake = cfg.wake_word.phrase.lower() if cfg.wake_word.enabled else None
    corpus = command_corpus(router, wake=wake) if cfg.asr.grammar else []
    if cfg.asr.engine == "vosk":
        from assistant.asr.vosk import VoskRecognizer, model_dir

        return VoskRecognizer(model_dir(cfg.asr.model_path, cfg.asr.model_package), corpus, free=cfg.asr.free_pass)
    from assistant.asr.pocketsphinx import PocketSphinxRecognizer, read_cmn

    cache = Path(cfg.models.resolved_cache_dir) / "asr"
    cmn = read_cmn(cfg.wake_word.resolved_cmn_file)
    return PocketSphinxRecognizer(corpus, cache, free=cfg.asr.free_pass or not corpus, cmn=cmn)


def load_spotter(cfg: AssistantConfig) -> Spotter:
    """The wake phrase plus the barge-in phrases, each with its threshold."""
    from assistant.asr.pocketsphinx import KeyphraseSpotter

    phrases = {cfg.wake_word.phrase.lower(): cfg.wake_word.threshold}
    for p in cfg.wake_word.stop_phrases:
        phrases.setdefault(p.lower(), cfg.wake_word.stop_threshold)
    return KeyphraseSpotter(phrases, cfg.wake_word.resolved_cmn_file)
