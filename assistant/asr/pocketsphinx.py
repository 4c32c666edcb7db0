"""PocketSphinx: the English embedded default (its en-us model ships in the wheel).

Two decoders run on the same frames: one with an n-gram language model built at start from the
skills' phrases (accurate for commands, RTF ~0.05), one with the bundled general English model
for the LLM fallback (RTF ~0.4 here, poor but better than nothing). Keyphrase spotting for the wake
word and "stop" is a third, tiny search.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from assistant.asr.base import AsrError, Recognition, Spot, Transcript, Word, split_known

log = logging.getLogger("assistant.asr")
_FRAME_S = 0.01  # pocketsphinx frames are 10 ms

# Cepstral means of speech at ordinary levels, measured over three voices at 0.2x-2x gain. The
# decoder's built-in start (40,3,-1,...) is so far from them that the first wake words of a stream
# were missed (1-3 of 6 cold, 0-1 of 6 after 10 s of noise; 24 of 24 from here with speech-only
# updates). Live CMN moves on from this start, and what it learns is kept between runs.
DEFAULT_CMN = "60,-12.3,-4.6,-0.6,-4.1,-3.6,-3.9,-8.0,-4.1,-2.1,0.3,0.1,-2.8"


# Search settings, measured on 8 Piper utterances (stream RTF = CPU time / audio time; "end" = the
# end_utt call the turn waits for): the second (fwdflat) pass cost 256 ms at each end and did not
# lower the word error rate (0.36 with it, 0.30 without); every second frame (ds=2) and at most 5000
# HMMs per frame take the free pass from RTF 0.58 to 0.23 at the same error rate.
_FREE_SEARCH: dict[str, Any] = {"fwdflat": False, "ds": 2, "maxhmmpf": 5000}
_COMMAND_SEARCH: dict[str, Any] = {}


def read_cmn(path: Path | None) -> str:
    """The feature means saved by an earlier run, or the default when there are none (or they are bad)."""
    if path is None or not path.is_file():
        return DEFAULT_CMN
    try:
        text = path.read_text().strip()
        values = [float(v) for v in text.split(",")]
    except (OSError, ValueError) as e:
        log.warning("ignoring %s (%s); starting from default feature means", path, e)
        return DEFAULT_CMN
    if len(values) != len(DEFAULT_CMN.split(",")) or not all(np.isfinite(values)):
        log.warning("ignoring %s: expected %d finite numbers", path, len(DEFAULT_CMN.split(",")))
        return DEFAULT_CMN
    return text


def _save_cmn(path: Path, cmn: str) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(cmn + "\n")
        tmp.replace(path)
    except OSError as e:  # a read-only state dir costs the next cold start, nothing else
        log.warning("cannot save the feature means to %s: %s", path, e)


def _decoder(cmn: str = DEFAULT_CMN, **kw: Any) -> Any:
    try:
        from pocketsphinx import Decoder
    except ImportError as e:
        raise AsrError("asr.engine = 'pocketsphinx' needs the pocketsphinx package: pip install pocketsphinx") from e
    return Decoder(loglevel="FATAL", cmn="live", cmninit=cmn, **kw)


def _lm_file(sentences: list[str], cache_dir: Path) -> Path:
    """An ARPA model of the command sentences, cached by content (building one takes seconds)."""
    from pocketsphinx.lm import ArpaBoLM

    text = "\n".join(sorted(sentences))
    path = cache_dir / f"commands-{hashlib.sha256(text.encode()).hexdigest()[:16]}.arpa"
    if not path.is_file():
        lm = ArpaBoLM(text=text, add_start=True)
        lm.compute()
        cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        with tmp.open("w") as f:
            lm.write(f)
        tmp.replace(path)
    return path


def _transcript(decoder: Any, grammar: bool) -> Transcript | None:
    hyp = decoder.hyp()
    if hyp is None or not hyp.hypstr.strip():
        return None
    logmath = decoder.logmath
    words = []
    for seg in decoder.seg():
        if seg.word.startswith(("<", "[")) or seg.word in ("<sil>", "[NOISE]"):
            continue
        conf = float(logmath.exp(seg.prob)) if seg.prob else 1.0
        words.append(Word(word=seg.word.split("(")[0], confidence=min(1.0, max(0.0, conf)),
                          start_s=seg.start_frame * _FRAME_S, end_s=(seg.end_frame + 1) * _FRAME_S))  # fmt: skip
    text = " ".join(w.word for w in words) or hyp.hypstr
    return Transcript.of(text, words, grammar)


class PocketSphinxRecognizer:
    def __init__(self, sentences: list[str], cache_dir: Path, *, free: bool = True, cmn: str = DEFAULT_CMN):
        self._cmn = cmn
        self._free = _decoder(cmn, **_FREE_SEARCH) if free or not sentences else None
        self._problems: list[str] = []
        self.sentences: list[str] = []
        self._active = False
        self._cmd: Any = None
        if sentences:
            self._load_commands(sentences, cache_dir)

    def _load_commands(self, sentences: list[str], cache_dir: Path) -> None:
        self._cmd = _decoder(self._cmn, lm=None, **_COMMAND_SEARCH)
        kept, unknown = split_known(sentences, lambda w: self._cmd.lookup_word(w) is not None)
        if unknown:
            self._problems.append(
                f"words not in the PocketSphinx dictionary, their phrases are left out of the command grammar: "
                f"{', '.join(sorted(unknown))}"
            )
        if not kept:
            raise AsrError("no command phrase can be recognized: every phrase has a word missing from the dictionary")
        self._cmd.add_lm_file("commands", str(_lm_file(kept, cache_dir)))
        self._cmd.activate_search("commands")
        self.sentences = kept

    @property
    def problems(self) -> list[str]:
        return list(self._problems)

    def _decoders(self) -> list[Any]:
        return [d for d in (self._cmd, self._free) if d is not None]

    def start(self, skip: int = 0) -> None:
        if self._active:
            for d in self._decoders():
                d.end_utt()
        for d in self._decoders():
            d.start_utt()
        self._active = True

    def accept(self, frame: np.ndarray) -> None:
        data = frame.astype(np.int16).tobytes()
        for d in self._decoders():
            d.process_raw(data)

    def partial(self) -> str:
        decoder = self._cmd if self._cmd is not None else self._free
        hyp = decoder.hyp() if decoder is not None else None
        return hyp.hypstr if hyp is not None else ""

    def pause(self) -> None:
        """Nothing to do: both passes stream."""

    def final(
        self, speech_end: int | None = None, *, skip_free: Callable[[Transcript | None], bool] | None = None
    ) -> Recognition:
        if not self._active:
            return Recognition()
        for d in self._decoders():
            d.end_utt()
        self._active = False
        return Recognition(
            command=_transcript(self._cmd, grammar=True) if self._cmd is not None else None,
            free=_transcript(self._free, grammar=False) if self._free is not None else None,
        )


class KeyphraseSpotter:
    """PocketSphinx keyphrase search; phrases and thresholds from config.

    Feed it speech only (the voice loop gates it with the VAD, plus pre-roll): long noise drags its
    running feature means away from speech, and the wake word is missed afterwards. Each `reset`
    ends an utterance, which updates the means; they are saved to `cmn_file` for the next run.
    """

    def __init__(self, phrases: dict[str, float], cmn_file: Path | None = None, *, learn: bool = True):
        self._cmn_file = cmn_file if learn else None  # read either way; written only by a loop that learns
        self._d = _decoder(read_cmn(cmn_file), lm=None)
        missing = sorted({w for p in phrases for w in p.split() if self._d.lookup_word(w) is None})
        if missing:
            raise AsrError(
                f"wake/stop phrase words not in the PocketSphinx dictionary: {', '.join(missing)}; "
                "set wake_word.phrase to dictionary words (e.g. 'hey computer')"
            )
        self.phrases = phrases
        self._file = _kws_file(phrases)
        self._d.add_kws("spot", str(self._file))
        self._d.activate_search("spot")
        self._d.start_utt()
        self.position = 0  # samples fed, ever
        self._utt_start = 0

    def accept(self, frame: np.ndarray) -> Spot | None:
        self._d.process_raw(frame.astype(np.int16).tobytes())
        self.position += len(frame)
        hyp = self._d.hyp()
        if hyp is not None and hyp.hypstr:
            start = end = self.position
            for seg in self._d.seg() or []:
                start = self._utt_start + int(seg.start_frame * _FRAME_S * 16000)
                end = self._utt_start + int((seg.end_frame + 1) * _FRAME_S * 16000)
            spot = Spot(phrase=hyp.hypstr.strip(), lag_samples=max(0, self.position - end),
                        start_lag_samples=max(0, self.position - start))  # fmt: skip
            self.reset()
            return spot
        if self.position - self._utt_start > 16000 * 60:  # restart every minute: keeps the search state bounded
            self.reset()
        return None

    def reset(self) -> None:
        self._d.end_utt()
        if self._cmn_file is not None and self.position - self._utt_start >= 16000 // 2:
            _save_cmn(self._cmn_file, self._d.get_cmn())
        self._d.start_utt()
        self._utt_start = self.position


def _kws_file(phrases: dict[str, float]) -> Path:
    import tempfile

    body = "".join(f"{p} /{t:.0e}/\n" for p, t in phrases.items())
    path = Path(tempfile.gettempdir()) / f"assistant-kws-{hashlib.sha256(body.encode()).hexdigest()[:12]}.txt"
    if not path.is_file():
        path.write_text(body)
    return path
