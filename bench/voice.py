"""Voice latency, ASR cost and wake-word accuracy on synthesized speech fed in real time.

    python -m bench.voice --json results.json

Speech is synthesized (Piper, with white noise at 20 dB SNR) and fed to the voice loop frame by
frame at the pace a microphone delivers it, while the reply's first audio is timed against the
moment the speech really ends in the audio (known from synthesis), not the VAD's decision: that is
what the user waits for.

- `eos_to_first_audio_ms_p50/_p95`: "hey computer, <command>" for local skills.
- `hangover_only_*` and `early_end_speedup`: the same commands with the early end switched off
  (`vad.early_end_ms` = the hang-over), the baseline measured in the same run.
- `llm_eos_to_first_audio_ms_p50`: questions no template knows, answered by the LLM (the profile's model,
  prompts prefilled at start as `assistant run` does), with the capture backlog switching the LLM to
  `engine.threads.contended` as the live loop does; `llm_uncontended_*` is the same set without
  that switch, and `max_backlog_ms_*` says how far capture fell behind in each.
- `asr_rtf`: recognizer CPU time / audio time over the local set (command model + free pass, as
  configured); `stage_rtf` splits VAD, spotter and the recognizer's two passes.
- `wake_hits` of `wake_total` in the paced run; `wake_false_accepts_per_hour` over commands said
  without the wake word in three voices (fed as fast as possible; nothing but the spotter decides).
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from assistant.asr import load_recognizer
from assistant.audio import FRAME, RATE, BufferSpeaker, Endpointer, frames, load_vad
from assistant.config import AssistantConfig, load_config
from assistant.pipeline import Assistant
from assistant.voice import TurnTrace, VoiceLoop
from assistant.voice.build import build_voice
from assistant.voice.commands import voice_corpus
from bench.report import emit
from tests.voice_audio import COMMANDS, speech

QUESTIONS = [
    "tell me a joke about cats",
    "why is the sky blue",
    "what is the capital of france",
    "who wrote the story of hamlet",
    "how do airplanes stay in the air",
    "what should i cook for dinner tonight",
]
VOICES = ["piper", "en-us", "en-gb"]


@functools.cache
def _said(text: str, voice: str = "piper", seed: int = 0) -> tuple[np.ndarray, int]:
    """Synthesized once per run (Piper takes about a second per phrase here)."""
    return speech(text, voice, seed=seed, lead_s=0.3, tail_s=0)


def _noise(seconds: float, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(0, 60, int(seconds * RATE)).astype(np.int16)


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


class PacedFeed:
    """Feeds a loop at the microphone's pace and remembers when each frame was delivered."""

    def __init__(self, loop: VoiceLoop, *, report_backlog: bool):
        self.loop, self.report_backlog = loop, report_backlog
        self.position = 0
        self.delivered: dict[int, float] = {}  # frame end sample -> wall time it was fed
        self.max_backlog = 0
        self._t0 = time.monotonic()

    def feed(self, audio: np.ndarray) -> None:
        for f in frames(audio):
            due = self._t0 + (self.position + len(f)) / RATE  # a block arrives once it is recorded
            now = time.monotonic()
            if due > now:
                time.sleep(due - now)
            behind = int((time.monotonic() - due) * RATE / FRAME)
            self.max_backlog = max(self.max_backlog, behind)
            self.loop.feed(f)
            self.position += len(f)
            self.delivered[self.position] = time.monotonic()
            if self.report_backlog:
                self.loop.backlog(behind)

    def until_idle(self, seed: int, min_s: float = 1.0, max_s: float = 20.0) -> None:
        """Room noise while the reply is produced, then at least `min_s` more."""
        start = self.position
        while self.position - start < max_s * RATE:
            self.feed(_noise(FRAME / RATE, seed + self.position))
            if self.loop.state == "idle" and self.position - start >= min_s * RATE and self.loop.wait_idle(0):
                return

    def wall_at(self, sample: int) -> float:
        """When `sample` was spoken: its frame's delivery time minus what came after it in that frame."""
        end = -(-sample // FRAME) * FRAME
        return self.delivered[end] - (end - sample) / RATE


def paced_turns(
    loop: VoiceLoop, texts: list[str], *, report_backlog: bool, seed: int = 0
) -> tuple[list[tuple[str, TurnTrace | None, float | None]], PacedFeed]:
    """(text, its trace, latency from the true end of speech to first audio in ms) per utterance."""
    feed = PacedFeed(loop, report_backlog=report_backlog)
    out: list[tuple[str, TurnTrace | None, float | None]] = []
    for i, text in enumerate(texts):
        audio, end = _said(f"hey computer, {text}", "piper", seed + i)
        true_end = feed.position + end
        before = len(loop.traces)
        feed.feed(audio)
        feed.until_idle(seed + i)
        traces = [t for t in loop.traces[before:] if t.woke_by == "wake_word"]
        trace = traces[0] if traces else None
        latency = None
        if trace is not None and trace.first_audio is not None:
            latency = (trace.first_audio - feed.wall_at(true_end)) * 1000
        out.append((text, trace, latency))
    return out, feed


def _quiet_loop(assistant: Assistant) -> VoiceLoop:
    def quiet(cfg: AssistantConfig) -> None:
        cfg.wake_word.follow_up_window_s = 0  # every turn needs its wake word: the bench counts them
        cfg.logging.trace_file = None

    return build_voice(_with(assistant, quiet), BufferSpeaker(), wake_word=True, learn=False)


def _with(assistant: Assistant, edit: Callable[[AssistantConfig], None]) -> Assistant:
    cfg = assistant.cfg.model_copy(deep=True)
    edit(cfg)
    return Assistant(cfg, assistant.engine, runtime=assistant.runtime)


def stage_costs(cfg: AssistantConfig, assistant: Assistant) -> dict[str, Any]:
    """CPU time per audio time of each stage, over the local set said by Piper."""
    said = [_said(f"hey computer, {t}", "piper", i)[0] for i, (t, _) in enumerate(COMMANDS)]
    audio = np.concatenate(said)
    seconds = len(audio) / RATE
    out: dict[str, float] = {}
    ep = Endpointer(load_vad(cfg.vad), cfg.vad)
    t = time.process_time()
    for f in frames(audio):
        ep.process(f)
    out["vad"] = (time.process_time() - t) / seconds
    from assistant.asr import load_spotter

    spotter = load_spotter(cfg.model_copy(update={"wake_word": cfg.wake_word.model_copy(update={"cmn_file": None})}))
    t = time.process_time()
    for f in frames(audio):
        spotter.accept(f)
    out["spotter"] = (time.process_time() - t) / seconds
    for name, free, grammar in (("asr", cfg.asr.free_pass, True), ("asr_command_only", False, True),
                                ("asr_free_only", True, False)):  # fmt: skip
        c = cfg.model_copy(update={"asr": cfg.asr.model_copy(update={"free_pass": free, "grammar": grammar})})
        rec = load_recognizer(c, voice_corpus(c, assistant.router))
        t = time.process_time()
        for utterance in said:
            rec.start()
            for f in frames(utterance):
                rec.accept(f)
            rec.final()
        out[name] = (time.process_time() - t) / seconds
    return {"asr_rtf": out["asr"], "stage_rtf": out}


def false_accepts(assistant: Assistant) -> tuple[int, float]:
    """Wake-word hits in speech that never says it, and how much audio that was (seconds)."""
    loop = _quiet_loop(assistant)
    n, seconds = 0, 0.0
    try:
        for v, voice in enumerate(VOICES):
            for i, (text, _) in enumerate(COMMANDS):
                audio = np.concatenate([_said(text, voice, 100 * v + i)[0], _noise(1.0, i)])
                seconds += len(audio) / RATE
                before = len(loop.traces)
                loop.run(frames(audio))
                loop.end_of_input()
                n += sum(t.woke_by == "wake_word" for t in loop.traces[before:])
    finally:
        loop.close()
    return n, seconds


def _breakdown(traces: list[TurnTrace]) -> dict[str, float]:
    stages: dict[str, list[float]] = {}
    for t in traces:
        for k, v in t.breakdown_ms().items():
            stages.setdefault(k, []).append(v)
    return {k: statistics.median(v) for k, v in stages.items()}


def _turns(kind: str, results: list[tuple[str, TurnTrace | None, float | None]]) -> list[dict[str, Any]]:
    """Each answered turn's stages, for the JSON and `--plot`."""
    return [{"label": f"{kind}: {text}", "breakdown": t.breakdown_ms()} for text, t, _ in results if t is not None]


def _summary(results: list[tuple[str, TurnTrace | None, float | None]]) -> tuple[list[float], list[TurnTrace]]:
    latencies = [lat for _, _, lat in results if lat is not None]
    return latencies, [t for _, t, _ in results if t is not None]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", type=Path, help="Also write the results to this file.")
    parser.add_argument("--no-llm", action="store_true", help="Local skills only (no model load).")
    parser.add_argument("--profile", choices=["standard", "small"], default="standard")
    parser.add_argument("--plot", type=Path, help="Also draw each turn's stages as stacked bars (PNG).")
    args = parser.parse_args()

    cfg = load_config(overrides={"profile": args.profile})
    t0 = time.perf_counter()
    assistant = Assistant(cfg, None) if args.no_llm else Assistant.load(cfg)
    warmed = assistant.warm()
    load_s = time.perf_counter() - t0
    results: dict[str, Any] = {"profile": args.profile, "model": None if args.no_llm else cfg.engine.base_model,
                               "load_s": load_s, "warmed": warmed}  # fmt: skip

    loop = _quiet_loop(assistant)
    try:
        local, _ = paced_turns(loop, [t for t, _ in COMMANDS], report_backlog=True)
    finally:
        loop.close()
    lat, traces = _summary(local)
    turns = _turns("local", local)
    expected = dict(COMMANDS)
    for text, trace, latency in local:
        got = trace.intent if trace else None
        mark = "ok " if got == expected[text] else "MISS"
        print(f"{mark} {text!r}: {got} {latency and round(latency)} ms {trace and trace.breakdown_ms()}")
    results.update(
        eos_to_first_audio_ms_p50=_pct(lat, 0.5),
        eos_to_first_audio_ms_p95=_pct(lat, 0.95),
        local_turns=len(lat),
        local_correct=sum(t is not None and t.intent == expected[x] for x, t, _ in local),
        wake_hits=sum(t is not None for _, t, _ in local),
        wake_total=len(local),
        ended_by={k: sum(t.ended_by == k for t in traces) for k in ("early", "hangover", "cut", "eof")},
        breakdown_ms=_breakdown(traces),
    )

    base = _with(assistant, lambda c: setattr(c.vad, "early_end_ms", c.vad.hangover_ms))
    loop = _quiet_loop(base)
    try:
        hang, _ = paced_turns(loop, [t for t, _ in COMMANDS[:6]], report_backlog=True, seed=50)
    finally:
        loop.close()
    hang_lat, _ = _summary(hang)
    early_same = [lat for (_, _, lat) in local[:6] if lat is not None]
    results["hangover_only_eos_to_first_audio_ms_p50"] = _pct(hang_lat, 0.5)
    results["early_end_speedup"] = (
        statistics.median(hang_lat) / statistics.median(early_same) if hang_lat and early_same else None
    )

    if not args.no_llm:
        for key, report in (("llm", True), ("llm_uncontended", False)):
            loop = _quiet_loop(assistant)
            try:
                answers, feed = paced_turns(loop, QUESTIONS, report_backlog=report, seed=200)
            finally:
                loop.close()
            lat, traces = _summary(answers)
            turns += _turns(key, answers)
            for text, trace, latency in answers:
                print(f"{key} {text!r}: heard {trace and trace.transcript!r} -> {trace and trace.intent} "
                      f"{latency and round(latency)} ms; reply {trace and trace.reply[:60]!r}")  # fmt: skip
            results[f"{key}_eos_to_first_audio_ms_p50"] = _pct(lat, 0.5)
            results[f"{key}_eos_to_first_audio_ms_p95"] = _pct(lat, 0.95)
            results[f"{key}_turns"] = len(lat)
            results[f"max_backlog_ms_{key}"] = feed.max_backlog * FRAME * 1000 / RATE
            results[f"{key}_breakdown_ms"] = _breakdown(traces)

    results.update(stage_costs(cfg, assistant))
    n, seconds = false_accepts(assistant)
    results.update(wake_false_accepts=n, wake_false_accept_audio_s=seconds,
                   wake_false_accepts_per_hour=n * 3600 / seconds)  # fmt: skip
    results["turns"] = turns
    emit(results, args.json)
    if args.plot:
        from bench.plots import voice_stages

        voice_stages(turns, args.plot, title=f"Voice turns, {args.profile} profile")
    assistant.close()


if __name__ == "__main__":
    main()
