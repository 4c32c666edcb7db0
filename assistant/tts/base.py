"""The synthesizer protocol and sentence chunking for streamed replies."""

from __future__ import annotations

import re
from typing import Protocol

import numpy as np


class TtsError(RuntimeError):
    """A voice or engine that cannot be used; the message says which and how to fix it."""


def gain(audio: np.ndarray, volume: float) -> np.ndarray:
    """`tts.volume` applied to int16 audio (clipped, never wrapped)."""
    if volume == 1.0:
        return audio
    from assistant.audio.io import to_int16

    return to_int16(audio.astype(np.float32) * volume)


class Synthesizer(Protocol):
    rate: int

    def synthesize(self, text: str) -> np.ndarray:
        """Mono int16 audio at `rate`."""
        ...


# A sentence ends at . ! ? (not inside "3.5" or after "Mr"); a long clause may be cut at , ; :
_END = re.compile(r"(?<!\b[A-Z][a-z])(?<!\b[A-Z])[.!?]+[\"')\]]*\s+|[.!?]+[\"')\]]*$")
_CLAUSE = re.compile(r"[,;:]\s+")


class SentenceSplitter:
    """Feeds streamed text in, yields speakable pieces as soon as they are complete.

    The first piece may be a clause of at least `first_clause_words` words, so the first audio
    does not wait for a long first sentence.
    """

    def __init__(self, first_clause_words: int = 6):
        self.buf = ""
        self.first_clause_words = first_clause_words
        self.emitted = 0

    def feed(self, text: str) -> list[str]:
        self.buf += text
        out = []
        while True:
            m = _END.search(self.buf)
            if m is None or m.end() == len(self.buf) and not self.buf.endswith((" ", "\n")):
                break
            out.append(self.buf[: m.end()].strip())
            self.buf = self.buf[m.end() :]
        if not out and self.emitted == 0:
            for m in _CLAUSE.finditer(self.buf):
                if len(self.buf[: m.start()].split()) >= self.first_clause_words:
                    out.append(self.buf[: m.end()].strip())
                    self.buf = self.buf[m.end() :]
                    break
        out = [s for s in out if s]
        self.emitted += len(out)
        return out

    def flush(self) -> list[str]:
        rest, self.buf = self.buf.strip(), ""
        if rest:
            self.emitted += 1
            return [rest]
        return []
