"""Vosk (Kaldi) streaming recognition for any Vosk model: a directory or an installed model package.

The model is loaded once per process and shared; the two recognizers (command grammar and free)
are created once and reused, because a fresh free-mode recognizer spends 1.5-2 s warming up.
"""

from __future__ import annotations

import importlib
import json
import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from assistant.asr.base import AsrError, Recognition, Transcript, Word, split_known
from assistant.audio.io import RATE

log = logging.getLogger("assistant.asr")
_MODELS: dict[Path, Any] = {}
_LOCK = threading.Lock()


def _vosk() -> Any:
    try:
        import vosk
    except ImportError as e:
        raise AsrError("asr.engine = 'vosk' needs the vosk package: pip install vosk") from e
    vosk.SetLogLevel(-1)
    return vosk


def model_dir(model_path: Path | None, model_package: str | None) -> Path:
    if model_path is not None:
        path = model_path
        key = "asr.model_path"
    else:
        assert model_package is not None
        key = "asr.model_package"
        module = model_package.replace("-", "_")
        try:
            mod = importlib.import_module(module)
        except ImportError as e:
            raise AsrError(
                f"{key} = {model_package!r}: the package is not installed (pip install {model_package})"
            ) from e
        path = Path(mod.__file__ or "").parent / "model"
    if not (path / "am").is_dir() or not (path / "conf").is_dir():
        raise AsrError(f"{key}: {path} is not a Vosk model directory (it needs am/ and conf/ inside)")
    return path


def load_model(path: Path) -> Any:
    with _LOCK:
        if path not in _MODELS:
            vosk = _vosk()
            try:
                _MODELS[path] = vosk.Model(str(path))
            except Exception as e:  # vosk raises a bare Exception on a broken model
                raise AsrError(f"the Vosk model in {path} cannot be loaded: {e}") from e
        return _MODELS[path]


def _transcript(raw: str, grammar: bool) -> Transcript | None:
    res = json.loads(raw)
    text = res.get("text", "").strip()
    if not text:
        return None
    words = [
        Word(word=w["word"], confidence=float(w.get("conf", 1.0)), start_s=w.get("start", 0.0), end_s=w.get("end", 0.0))
        for w in res.get("result", [])
    ]
    return Transcript.of(text, words, grammar)


class VoskRecognizer:
    def __init__(self, path: Path, sentences: list[str] | None, *, free: bool = True):
        vosk = _vosk()
        self.model = load_model(path)
        self._problems: list[str] = []
        self._cmd = None
        if sentences:
            kept, unknown = split_known(sentences, lambda w: self.model.vosk_model_find_word(w) >= 0)
            if unknown:
                self._problems.append(
                    f"words not in the Vosk model's vocabulary, their phrases are left out of the grammar: "
                    f"{', '.join(sorted(unknown))}"
                )
            if kept:
                self._cmd = vosk.KaldiRecognizer(self.model, RATE, json.dumps(kept, ensure_ascii=False))
                self._cmd.SetWords(True)
        self._free = vosk.KaldiRecognizer(self.model, RATE) if free or self._cmd is None else None
        if self._free is not None:
            self._free.SetWords(True)
        self.sentences = sentences or []

    @property
    def problems(self) -> list[str]:
        return list(self._problems)

    def _recognizers(self) -> list[Any]:
        return [r for r in (self._cmd, self._free) if r is not None]

    def start(self, skip: int = 0) -> None:
        for r in self._recognizers():
            r.Reset()

    def accept(self, frame: np.ndarray) -> None:
        data = frame.astype(np.int16).tobytes()
        for r in self._recognizers():
            r.AcceptWaveform(data)

    def partial(self) -> str:
        r = self._cmd or self._free
        return str(json.loads(r.PartialResult()).get("partial", "")) if r is not None else ""

    def pause(self) -> None:
        """Nothing to do: both passes stream."""

    def final(
        self, speech_end: int | None = None, *, skip_free: Callable[[Transcript | None], bool] | None = None
    ) -> Recognition:
        return Recognition(
            command=_transcript(self._cmd.FinalResult(), grammar=True) if self._cmd is not None else None,
            free=_transcript(self._free.FinalResult(), grammar=False) if self._free is not None else None,
        )
