"""How well each English recognizer hears commands and open questions, clean and in noise.

    python -m bench.asr --json asr.json                 # every recognizer, the whole set (~32 min on 2 cores)
    python -m bench.asr --quick                         # 8 utterances, 2 voices: a smoke run

The set is made at run time, reproducibly: 60 commands (cases of the routing sets that the
templates route without an LLM) and 60 open questions (every other one of bench/data/quality.toml),
spoken by four voices (Piper joe, espeak-ng en-us, en-gb and en-us+f3), each clean and with white
noise at 10 dB SNR, with half a second of silence before and one second after. None of these
texts was used to write the recognizers' grammar (it comes from the templates).

Each recognizer runs as the voice loop runs it (`assistant.asr.load_recognizer`: the command
grammar on PocketSphinx, the free pass on the named model). The utterance is fed up to 160 ms
after the end of speech, where the loop asks for a partial (a neural recognizer starts decoding
there), then the rest of the 500 ms hang-over passes in real time, and `final` is called.

Reported per recognizer: `wer` of the free pass on the open questions, clean and noisy, and per
voice; `wer_all` over every utterance; `command_intent` (the loop's choice of grammar or free
text, routed by the templates, must reach the intent the reference text reaches); `rtf` (decode
time / speech time); `eos_to_text_ms` p50/p95 on the questions (end of speech to final free text,
the hang-over included).
Texts are compared after lowercasing, punctuation removal, spelled numbers as digits and common
contractions expanded, on both sides.
"""

from __future__ import annotations

import argparse
import statistics
import time
import tomllib
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
from rapidfuzz.distance import Levenshtein

from assistant.asr import load_recognizer
from assistant.asr.base import Transcript
from assistant.asr.neural import NeuralRecognizer, Transcriber
from assistant.audio import RATE
from assistant.config import load_config
from assistant.pipeline import Assistant
from assistant.router.evaluate import PhraseFile
from assistant.skills.slots import to_digits
from assistant.text import normalize
from assistant.voice.commands import accept, voice_corpus
from bench.report import emit, percentile
from tests.voice_audio import speech

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "tests" / "data" / "routing-config.toml"  # the routing sets' devices
VOICES = ["piper", "en-us", "en-gb", "en-us+f3"]
RECOGNIZERS = {"pocketsphinx": "", "whisper-tiny.en": "whisper-tiny.en-ct2", "moonshine-base": "moonshine-base-en-onnx"}
PAUSE_MS, HANGOVER_MS = 160, 500  # the voice loop's early_end_ms and hangover_ms defaults
_CONTRACTIONS = {"what's": "what is", "it's": "it is", "i'm": "i am", "don't": "do not", "that's": "that is",
                 "where's": "where is", "who's": "who is", "how's": "how is", "there's": "there is",
                 "let's": "let us", "can't": "cannot", "isn't": "is not", "i've": "i have", "you're": "you are",
                 "what're": "what are", "today's": "todays", "o'clock": "oclock"}  # fmt: skip


def words(text: str) -> list[str]:
    """Comparable words: lowercase, no punctuation, spelled numbers as digits, contractions expanded."""
    t = " ".join(_CONTRACTIONS.get(w, w) for w in normalize(text).split())
    t = to_digits(t.replace("-", " "))
    return [w.strip("'.") for w in t.split() if w.strip("'.")]


def wer(refs: list[str], hyps: list[str]) -> float:
    """Word error rate over a set: edits over reference words."""
    edits = sum(Levenshtein.distance(words(r), words(h)) for r, h in zip(refs, hyps, strict=True))
    return edits / max(1, sum(len(words(r)) for r in refs))


def utterances(assistant: Assistant) -> list[tuple[str, str, str | None]]:
    """(kind, text, intent the text routes to) for 60 commands and 60 questions, in a fixed order."""
    router = assistant.router
    commands: list[tuple[str, str, str | None]] = []
    seen: set[str] = set()
    for name in ("routing.toml", "routing-heldout.toml"):
        cases = PhraseFile.model_validate(tomllib.loads((ROOT / "tests" / "data" / name).read_text())).case
        for c in cases:
            route = router.route(c.text, classify=False)
            key = normalize(c.text)
            if route.stage == "template" and route.intent == c.intent and key not in seen and c.text.isascii():
                seen.add(key)
                commands.append(("command", c.text, route.intent))
    step = max(1, len(commands) // 60)
    questions = tomllib.loads((ROOT / "bench" / "data" / "quality.toml").read_text())["question"][::2]
    return commands[::step][:60] + [("question", q["text"], None) for q in questions[:60]]


class Timed:
    """A transcriber that records how long each decode took and how much audio it heard."""

    def __init__(self, inner: Transcriber):
        self.inner = inner
        self.calls: list[tuple[float, float]] = []  # (seconds, audio seconds)

    def transcribe(self, audio: np.ndarray) -> Transcript | None:
        t = time.perf_counter()
        out = self.inner.transcribe(audio)
        self.calls.append((time.perf_counter() - t, len(audio) / RATE))
        return out


def run_one(rec: Any, audio: np.ndarray, speech_end: int) -> tuple[Any, float, float]:
    """(recognition, end of speech -> final text in s, CPU-bound decode seconds of this utterance)."""
    frame = 512
    pause = min(len(audio), speech_end + PAUSE_MS * RATE // 1000)
    rec.start()
    t_feed = time.perf_counter()
    for i in range(0, pause, frame):
        rec.accept(audio[i : min(i + frame, pause)])
    feed_s = time.perf_counter() - t_feed
    rec.partial()
    rec.pause()  # what the loop does once speech pauses: a neural recognizer starts decoding here
    t_pause = time.perf_counter()
    end = min(len(audio), speech_end + HANGOVER_MS * RATE // 1000)
    for i in range(pause, end, frame):
        rec.accept(audio[i : min(i + frame, end)])
    time.sleep(max(0.0, t_pause + (HANGOVER_MS - PAUSE_MS) / 1000 - time.perf_counter()))
    result = rec.final(speech_end=speech_end)
    done = time.perf_counter()
    return result, PAUSE_MS / 1000 + done - t_pause, feed_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", type=Path, help="Also write the results to this file.")
    parser.add_argument("--recognizers", nargs="*", choices=sorted(RECOGNIZERS), default=sorted(RECOGNIZERS))
    parser.add_argument("--quick", action="store_true", help="8 utterances, 2 voices (a smoke run).")
    args = parser.parse_args()

    base = load_config(CONFIG, overrides={"profile": "small"})  # no LLM is loaded: only its templates route
    assistant = Assistant(base, None)
    items = utterances(assistant)
    voices = VOICES[:2] if args.quick else VOICES
    if args.quick:
        items = items[:4] + items[60:64]
    clips = []
    t0 = time.perf_counter()
    for v in voices:
        for k, (kind, text, intent) in enumerate(items):
            for snr in (None, 10.0):
                audio, end = speech(text, v, snr_db=snr, seed=k)
                clips.append((v, snr, kind, text, intent, audio, end))
    results: dict[str, Any] = {"utterances": len(items), "voices": voices, "clips": len(clips),
                               "synthesis_s": time.perf_counter() - t0}  # fmt: skip
    for name in args.recognizers:
        cfg = load_config(CONFIG, overrides={"profile": "small", "asr": {"free_model": RECOGNIZERS[name]}})
        rec = load_recognizer(cfg, voice_corpus(cfg, assistant.router))
        timed = None
        if isinstance(rec, NeuralRecognizer):
            timed = Timed(rec.transcriber)
            rec.transcriber = timed
        refs: dict[str, list[str]] = defaultdict(list)
        hyps: dict[str, list[str]] = defaultdict(list)
        intent_ok: list[bool] = []
        latency: list[float] = []
        rtf: list[float] = []
        t0 = time.perf_counter()
        for v, snr, kind, text, intent, audio, end in clips:
            before = len(timed.calls) if timed else 0
            got, eos_s, feed_s = run_one(rec, audio, end)
            if kind == "question":
                latency.append(eos_s)
            speech_s = (end - RATE // 2) / RATE
            decode_s = sum(c[0] for c in timed.calls[before:]) if timed else feed_s + max(0.0, eos_s - 0.5)
            rtf.append(decode_s / speech_s)
            free = got.free.text if got.free is not None else ""
            cond = "clean" if snr is None else "noisy"
            for key in (f"{kind}.{cond}", f"{kind}.{cond}.{v}", f"all.{cond}"):
                refs[key].append(text)
                hyps[key].append(free)
            if kind == "command":
                ok, _ = accept(got.command, assistant.router, cfg.asr.min_confidence)
                heard = got.command.text if ok and got.command is not None else free
                intent_ok.append(assistant.router.route(heard, classify=False).intent == intent)
        out = {
            "wer_clean": wer(refs["question.clean"], hyps["question.clean"]),
            "wer_noisy": wer(refs["question.noisy"], hyps["question.noisy"]),
            "wer_all_clean": wer(refs["all.clean"], hyps["all.clean"]),
            "wer_all_noisy": wer(refs["all.noisy"], hyps["all.noisy"]),
            "wer_by_voice": {
                f"{v}.{c}": round(wer(refs[f"question.{c}.{v}"], hyps[f"question.{c}.{v}"]), 3)
                for v in voices
                for c in ("clean", "noisy")
            },  # fmt: skip
            "command_intent": sum(intent_ok) / max(1, len(intent_ok)),
            "rtf_median": statistics.median(rtf),
            "eos_to_text_ms_p50": 1000 * (percentile(latency, 0.5) or 0),
            "eos_to_text_ms_p95": 1000 * (percentile(latency, 0.95) or 0),
            "reused_partial": rec.reused / len(clips) if isinstance(rec, NeuralRecognizer) else None,
            "seconds": time.perf_counter() - t0,
        }
        results[name] = {k: round(v, 3) if isinstance(v, float) else v for k, v in out.items()}
    emit(results, args.json)


if __name__ == "__main__":
    main()
