"""Speech recognition: a small `Recognizer` protocol with Vosk and PocketSphinx behind it, plus
keyphrase spotting for the wake word and barge-in.

`load_recognizer` takes the command sentences (the voice loop builds them from the router's
phrases, `assistant.voice.commands`): a recognizer needs nothing of the router.
"""

from __future__ import annotations

from pathlib import Path

from assistant.asr.base import AsrError, Recognition, Recognizer, Spot, Spotter, Transcript, Word
from assistant.config.schema import AssistantConfig

__all__ = [
    "AsrError",
    "Recognition",
    "Recognizer",
    "Spot",
    "Spotter",
    "Transcript",
    "Word",
    "load_recognizer",
    "load_spotter",
]


def load_recognizer(cfg: AssistantConfig, corpus: list[str]) -> Recognizer:
    """The configured recognizer with `corpus` as its command grammar (empty: free recognition only)."""
    if cfg.asr.engine == "vosk":
        from assistant.asr.vosk import VoskRecognizer, model_dir

        return VoskRecognizer(model_dir(cfg.asr.model_path, cfg.asr.model_package), corpus, free=cfg.asr.free_pass)
    from assistant.asr.pocketsphinx import PocketSphinxRecognizer, read_cmn

    cache = Path(cfg.models.resolved_cache_dir) / "asr"
    cmn = read_cmn(cfg.wake_word.resolved_cmn_file)
    return PocketSphinxRecognizer(corpus, cache, free=cfg.asr.free_pass or not corpus, cmn=cmn)


def load_spotter(cfg: AssistantConfig, *, learn: bool = True) -> Spotter:
    """The wake phrase plus the barge-in phrases, each with its threshold. `learn`: save what it
    learns of the microphone (feature means) for the next run; a one-off file run only reads it."""
    from assistant.asr.pocketsphinx import KeyphraseSpotter

    phrases = {cfg.wake_word.phrase.lower(): cfg.wake_word.threshold}
    for p in cfg.wake_word.stop_phrases:
        phrases.setdefault(p.lower(), cfg.wake_word.stop_threshold)
    return KeyphraseSpotter(phrases, cfg.wake_word.resolved_cmn_file, learn=learn)
