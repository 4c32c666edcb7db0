"""Wake-word hits and false accepts per spotter, on synthesized speech with and without noise.

    python -m bench.wake --json wake.json          # ~10 minutes on 2 cores
    python -m bench.wake --quick                   # a smoke run

Hits: 30 requests of bench.asr's set (15 commands, 15 questions) preceded by the wake phrase
("<phrase>, <request>"), in the four voices of bench.asr, each clean and with white noise at
10 dB SNR: 240 trials per spotter. A hit is the wake phrase spotted before the request ends.
False accepts: bench.asr's whole set without any wake phrase (120 requests x 4 voices x clean
and 10 dB; about 55 minutes of audio, half a second of noise or silence before and one second
after each) plus 5 minutes of white and pink noise in 5 s pieces; reported per hour of audio.
Each clip is fed as the voice loop feeds the spotter, one utterance at a time (`reset` between).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np

from assistant.asr import Spotter, load_spotter
from assistant.audio import RATE
from assistant.config import load_config
from assistant.pipeline import Assistant
from bench.asr import CONFIG, VOICES, utterances
from bench.report import emit
from tests.voice_audio import speech

SPOTTERS = {
    "pocketsphinx:hey computer": {"engine": "pocketsphinx", "phrase": "hey computer"},
    "microwakeword:okay nabu": {"engine": "microwakeword", "phrase": "okay nabu"},
    "microwakeword:hey mycroft": {"engine": "microwakeword", "phrase": "hey mycroft"},
    "microwakeword:hey jarvis": {"engine": "microwakeword", "phrase": "hey jarvis"},
}


def spots(spotter: Spotter, audio: np.ndarray, phrase: str) -> list[int]:
    """Samples at which `phrase` fired in one utterance fed frame by frame."""
    spotter.reset()
    out = []
    for i in range(0, len(audio), 512):
        spot = spotter.accept(audio[i : i + 512])
        if spot is not None and spot.phrase == phrase:
            out.append(i + 512)
    return out


def noise(seconds: float, seed: int) -> list[np.ndarray]:
    """White and pink noise in 5 s pieces at a speech-like level."""
    rng = np.random.default_rng(seed)
    pieces = []
    for k in range(int(seconds // 5)):
        white = rng.normal(0, 1, 5 * RATE)
        if k % 2:
            spectrum = np.fft.rfft(white)
            spectrum /= np.sqrt(np.maximum(1, np.arange(len(spectrum))))
            white = np.fft.irfft(spectrum, 5 * RATE)
        pieces.append((white / white.std() * 1500).clip(-32768, 32767).astype(np.int16))
    return pieces


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", type=Path, help="Also write the results to this file.")
    parser.add_argument("--spotters", nargs="*", choices=sorted(SPOTTERS), default=list(SPOTTERS))
    parser.add_argument("--quick", action="store_true", help="4 requests, 2 voices.")
    args = parser.parse_args()

    items = utterances(Assistant(load_config(CONFIG, overrides={"profile": "small"}), None))
    voices = VOICES[:2] if args.quick else VOICES
    requests = (items[:4] if args.quick else items[:60:4] + items[60::4])[:30]
    negatives = items[:8] if args.quick else items
    t0 = time.perf_counter()
    plain = [speech(text, v, snr_db=snr, seed=k)[0] for v in voices for k, (_, text, _) in enumerate(negatives)
             for snr in (None, 10.0)]  # fmt: skip
    plain += noise(20 if args.quick else 300, 0)
    audio_s = sum(len(a) for a in plain) / RATE
    results: dict[str, Any] = {"false_accept_audio_min": audio_s / 60, "trials_per_spotter": 0}
    for name in args.spotters:
        ww = SPOTTERS[name]
        cfg = load_config(CONFIG, overrides={"profile": "small", "wake_word": ww})
        spotter = load_spotter(cfg, learn=False)
        phrase = ww["phrase"]
        hits, trials, lags = 0, 0, []
        t = time.perf_counter()
        for v in voices:
            for k, (_, text, _) in enumerate(requests):
                for snr in (None, 10.0):
                    audio, end = speech(f"{phrase}, {text}", v, snr_db=snr, seed=100 + k)
                    fired = spots(spotter, audio, phrase)
                    trials += 1
                    if fired and fired[0] <= end:
                        hits += 1
                        lags.append(fired[0] / RATE)
        false = sum(len(spots(spotter, a, phrase)) for a in plain)
        results["trials_per_spotter"] = trials
        results[name] = {
            "hits": hits / trials,
            "false_accepts": false,
            "false_accepts_per_hour": false / (audio_s / 3600),
            "seconds": round(time.perf_counter() - t, 1),
        }
    results["total_s"] = time.perf_counter() - t0
    emit(results, args.json)


if __name__ == "__main__":
    main()
