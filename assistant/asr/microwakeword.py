"""microWakeWord: a streaming wake-word model (TFLite, int8) per phrase, from pymicro-wakeword.

It only knows its trained phrases, so the barge-in phrases ("stop") keep a keyphrase spotter beside
it. It fires at the end of the phrase; listening then starts there, and the recognizer never hears
the wake word (its words need not be in the command grammar's dictionary).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from assistant.asr.base import AsrError, Spot, Spotter
from assistant.config.schema import MICRO_WAKE_WORDS

REFRACTORY_S = 1.0  # one utterance of the phrase fires once, however long its probability stays high


class MicroWakeWordSpotter:
    """The wake phrase with microWakeWord, other phrases with `others` (a keyphrase spotter)."""

    def __init__(self, models_dir: Path, phrase: str, *, cutoff: float | None = None, others: Spotter | None = None):
        try:
            from pymicro_wakeword import MicroWakeWord, MicroWakeWordFeatures
        except ImportError as e:
            raise AsrError(
                "wake_word.engine = 'microwakeword' needs pymicro-wakeword: pip install pymicro-wakeword"
            ) from e
        self.phrase = phrase.lower()
        if self.phrase not in MICRO_WAKE_WORDS:
            raise AsrError(f"no microWakeWord model for '{phrase}': use one of {', '.join(sorted(MICRO_WAKE_WORDS))}")
        config = models_dir / f"{MICRO_WAKE_WORDS[self.phrase]}.json"
        if not config.is_file():
            raise AsrError(f"microWakeWord model {config} is missing: see `assistant models list`")
        self._model = MicroWakeWord.from_config(config)
        if cutoff is not None:
            self._model.probability_cutoff = cutoff
        self.cutoff = self._model.probability_cutoff
        self._features_type = MicroWakeWordFeatures
        self._features = MicroWakeWordFeatures()
        self._others = others
        self.position = 0  # samples fed, ever
        self._last_fired = -(10**9)

    def accept(self, frame: np.ndarray) -> Spot | None:
        other = self._others.accept(frame) if self._others is not None else None
        self.position += len(frame)
        fired = False
        for features in self._features.process_streaming(frame.astype(np.int16).tobytes()):
            fired = bool(self._model.process_streaming(features)) or fired
        if fired and self.position - self._last_fired > REFRACTORY_S * 16000:
            self._last_fired = self.position
            self._restart()
            return Spot(phrase=self.phrase, lag_samples=0, start_lag_samples=0)
        return other

    def _restart(self) -> None:
        self._model.reset()
        self._features = self._features_type()

    def reset(self) -> None:
        self._restart()
        if self._others is not None:
            self._others.reset()
