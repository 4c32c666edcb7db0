"""What every recognizer returns and what the voice loop needs from it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import numpy as np
from pydantic import BaseModel, Field


class AsrError(RuntimeError):
    """A recognizer or model that cannot be used; the message names the file or key and the fix."""


class Word(BaseModel):
    word: str
    confidence: float = Field(ge=0, le=1)
    start_s: float = 0.0
    end_s: float = 0.0


class Transcript(BaseModel):
    text: str
    words: list[Word] = Field(default_factory=list)
    confidence: float = Field(0.0, ge=0, le=1, description="Lowest word confidence (1.0 when none is known).")
    grammar: bool = Field(description="From the command grammar (True) or free recognition (False).")

    @classmethod
    def of(cls, text: str, words: list[Word], grammar: bool) -> Transcript:
        """A transcript whose confidence is that of its least certain word."""
        low = min((w.confidence for w in words), default=1.0)
        return cls(text=text, words=words, confidence=low, grammar=grammar)


class Recognition(BaseModel):
    """Both passes of one utterance: the command grammar, and free recognition for the LLM fallback."""

    command: Transcript | None = None
    free: Transcript | None = None


class Recognizer(Protocol):
    """Streaming recognition of one utterance at a time, 16 kHz int16 frames in.

    `start` begins an utterance (models stay loaded; recognizers are reused; `skip`: samples at its
    start that hold the wake phrase, which a recognizer of whole utterances may leave out), `accept` takes audio,
    `partial` is the current command hypothesis (cheap, called every frame), `pause` says speech
    paused without a complete command (a recognizer that decodes whole utterances may start now),
    `final` ends it: `speech_end` (samples since `start`) is where speech stopped when the caller
    knows, and `skip_free` may spare the free pass when the command pass is what the caller takes.
    """

    def start(self, skip: int = 0) -> None: ...

    def accept(self, frame: np.ndarray) -> None: ...

    def partial(self) -> str: ...

    def pause(self) -> None: ...

    def final(
        self, speech_end: int | None = None, *, skip_free: Callable[[Transcript | None], bool] | None = None
    ) -> Recognition: ...

    @property
    def problems(self) -> list[str]: ...


class Spot(BaseModel):
    phrase: str
    lag_samples: int = Field(ge=0, description="How long before the end of the audio fed so far the phrase ended.")
    start_lag_samples: int = Field(0, ge=0, description="How long before the end of the audio fed the phrase began.")


class Spotter(Protocol):
    """Keyphrase spotting on a continuous stream: the wake word, and "stop" during replies."""

    def accept(self, frame: np.ndarray) -> Spot | None:
        """The phrase heard in the audio so far, if one just fired."""
        ...

    def reset(self) -> None: ...


def split_known(sentences: list[str], known: Callable[[str], bool]) -> tuple[list[str], set[str]]:
    """Sentences whose words are all in the recognizer's vocabulary, and the unknown words.

    Vosk silently drops unknown grammar words and PocketSphinx refuses them; both would make a
    phrase unrecognizable without saying so, so we drop the phrase and report the word.
    """
    unknown: set[str] = set()
    kept = []
    for s in sentences:
        missing = {w for w in s.split() if not known(w)}
        if missing:
            unknown |= missing
        else:
            kept.append(s)
    return kept, unknown
