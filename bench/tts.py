"""Which voice to speak replies with, without listening: how well a recognizer understands each voice,
and how fast each one synthesizes.

    python -m bench.tts --json tts.json        # ~3 minutes on 2 cores

Thirty reply-like sentences (the answers a user hears: facts, times, timers, conversions) are
synthesized by each engine (espeak-ng en-us, Piper joe, hibari heart); Moonshine (the default
open-speech recognizer, which was never trained on these voices) transcribes each, clean. Reported
per voice: `wer`, `rtf` (synthesis time / audio time, median), `first_sentence_ms` (median time to
synthesize one sentence: what the first audio of a reply waits for).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Any

from assistant.asr.neural import MoonshineTranscriber
from assistant.audio import RATE, resample
from assistant.config import load_config
from assistant.engine import model_store
from bench.asr import wer
from bench.report import emit
from tests.voice_audio import voice

REPLIES = [
    "The capital of France is Paris.", "It is twenty past three in the afternoon.",
    "Your timer for five minutes has started.", "Five miles is about eight kilometers.",
    "Water boils at one hundred degrees Celsius.", "Today is Sunday, the twenty second of November.",
    "I turned off the kitchen light.", "The bedroom fan is now on.", "Seven times eight is fifty six.",
    "Good morning in French is bonjour.", "William Shakespeare wrote Romeo and Juliet.",
    "The largest planet in our solar system is Jupiter.", "Your timer has three minutes left.",
    "I cancelled the timer.", "Spiders have eight legs.", "Plants take in carbon dioxide from the air.",
    "The moon is about three hundred eighty thousand kilometers away.", "Sorry, I did not catch that.",
    "The thermostat is set to twenty one degrees.", "Boil the egg for about nine minutes.",
    "There are one thousand grams in a kilogram.", "The front door is locked.",
    "Light travels faster than sound.", "A week has seven days.", "The sky looks blue because air scatters blue light.",
    "Half of ninety is forty five.", "Thank you in Spanish is gracias.", "Mount Everest is the tallest mountain.",
    "It will be dark in about two hours.", "I set the living room lamp to fifty percent.",
]  # fmt: skip
VOICES = ["en-us", "piper", "hibari"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", type=Path, help="Also write the results to this file.")
    args = parser.parse_args()
    store = model_store(load_config())
    ears = MoonshineTranscriber(store.prepare(store.get("moonshine-base-en-onnx")))
    results: dict[str, Any] = {"sentences": len(REPLIES)}
    for name in VOICES:
        synth = voice(name)
        heard, rtf, ms = [], [], []
        for text in REPLIES:
            t = time.perf_counter()
            audio = synth.synthesize(text)
            took = time.perf_counter() - t
            rtf.append(took / (len(audio) / synth.rate))
            ms.append(1000 * took)
            got = ears.transcribe(resample(audio, synth.rate))
            heard.append(got.text if got is not None else "")
        results[name] = {"wer": wer(REPLIES, heard), "rtf": statistics.median(rtf),
                         "first_sentence_ms": statistics.median(ms), "rate": synth.rate}  # fmt: skip
    results["recognizer_rate"] = RATE
    emit(results, args.json)


if __name__ == "__main__":
    main()
