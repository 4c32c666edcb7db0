"""Speech recognition: a small `Recognizer` protocol with Vosk and PocketSphinx behind it, plus
keyphrase spotting for the wake word and barge-in.

`load_recognizer` takes the command sentences (the voice loop builds them from the router's
phrases, `assistant.voice.commands`): a recognizer needs nothing of the router.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from assistant.asr.base import AsrError, Recognition, Recognizer, Spot, Spotter, Transcript, Word
from assistant.config.schema import AssistantConfig

if TYPE_CHECKING:
    from assistant.modelstore import ModelStore

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
    """The configured recognizer with `corpus` as its command grammar (empty: free recognition only).

    With `asr.free_model` a neural recognizer takes the free pass, and the engine keeps the grammar.
    """
    neural = cfg.asr.free_pass and bool(cfg.asr.resolved_free_model)
    if neural and not corpus:
        return _neural(cfg, None)
    if cfg.asr.engine == "vosk":
        from assistant.asr.vosk import VoskRecognizer, model_dir

        free = cfg.asr.free_pass and not neural
        grammar = VoskRecognizer(model_dir(cfg.asr.model_path, cfg.asr.model_package), corpus, free=free)
        return _neural(cfg, grammar) if neural else grammar
    from assistant.asr.pocketsphinx import PocketSphinxRecognizer, read_cmn

    cache = Path(cfg.models.resolved_cache_dir) / "asr"
    cmn = read_cmn(cfg.wake_word.resolved_cmn_file)
    if neural:
        return _neural(cfg, PocketSphinxRecognizer(corpus, cache, free=False, cmn=cmn))
    return PocketSphinxRecognizer(corpus, cache, free=cfg.asr.free_pass or not corpus, cmn=cmn)


def _neural(cfg: AssistantConfig, commands: Recognizer | None) -> Recognizer:
    """`asr.free_model` (a verified model from the store) for open speech, `commands` for the grammar."""
    from assistant.asr.neural import MoonshineTranscriber, NeuralRecognizer, Transcriber, WhisperTranscriber
    from assistant.modelstore import ModelError, ModelStore

    store = ModelStore.from_config(cfg)
    try:
        manifest = store.get(cfg.asr.resolved_free_model)
    except ModelError as exc:
        raise AsrError(f"asr.free_model: {exc}") from exc
    transcriber: Transcriber
    kind = (manifest.format, manifest.architecture)
    if kind not in (("onnx", "moonshine"), ("ctranslate2", "whisper")):
        raise AsrError(
            f"asr.free_model: '{manifest.name}' is a {manifest.format} {manifest.architecture} model, not a speech "
            "recognizer; use moonshine-base-en-onnx or whisper-tiny.en-ct2 (see `assistant models list`)"
        )
    path = _model_dir(store, manifest.name, "asr.free_model")
    if kind == ("onnx", "moonshine"):
        transcriber = MoonshineTranscriber(path, threads=cfg.asr.threads)
    else:
        transcriber = WhisperTranscriber(path, threads=cfg.asr.threads)
    return NeuralRecognizer(transcriber, commands)


def load_spotter(cfg: AssistantConfig, *, learn: bool = True) -> Spotter:
    """The wake phrase plus the barge-in phrases, each with its threshold. `learn`: save what it
    learns of the microphone (feature means) for the next run; a one-off file run only reads it."""
    from assistant.asr.pocketsphinx import KeyphraseSpotter

    ww = cfg.wake_word
    phrases = {} if ww.engine == "microwakeword" else {ww.phrase.lower(): ww.threshold}
    for p in ww.stop_phrases:
        phrases.setdefault(p.lower(), ww.stop_threshold)
    keyphrases = KeyphraseSpotter(phrases, ww.resolved_cmn_file, learn=learn) if phrases else None
    if ww.engine == "pocketsphinx":
        assert keyphrases is not None
        return keyphrases
    from assistant.asr.microwakeword import MicroWakeWordSpotter
    from assistant.modelstore import ModelStore

    models = _model_dir(ModelStore.from_config(cfg), "microwakeword-models", "wake_word.engine")
    return MicroWakeWordSpotter(models, ww.phrase, cutoff=ww.probability, others=keyphrases)


def _model_dir(store: ModelStore, name: str, key: str) -> Path:
    """A speech model's folder from the model store, verified."""
    from assistant.modelstore import ModelError

    try:
        return store.prepare(store.get(name))
    except ModelError as exc:
        raise AsrError(f"{key}: {exc}") from exc
