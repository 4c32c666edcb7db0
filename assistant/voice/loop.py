"""The voice loop: microphone frames in, spoken replies out, around the same `Assistant.ask`.

    idle ──wake word / follow-up speech──▶ listening ──end of speech──▶ responding ──▶ idle
      ▲                                                                     │
      └──────────────── "stop" / wake word while speaking (barge-in) ◀──────┘

One thread feeds 32 ms frames (`feed`); the turn (routing, skill, LLM) runs on a worker thread and
a TTS thread speaks each sentence as soon as it is complete. While a reply plays, the recognizer
hears nothing (half-duplex); only the keyphrase spotter listens for the wake word or "stop", and
a hit on words the assistant itself is saying is ignored (echo check).
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, Field

from assistant.asr import Recognition, Recognizer, Spot, Spotter, Transcript
from assistant.audio import FRAME, RATE, Endpointer, RingBuffer, Speaker
from assistant.audio.vad import VadEvent
from assistant.config.schema import AssistantConfig
from assistant.pipeline import Assistant, Session, TurnResult
from assistant.tts import SentenceSplitter, Synthesizer
from assistant.voice.commands import accept, is_command, strip_wake, words_of

log = logging.getLogger("assistant.voice")
State = Literal["idle", "listening", "responding"]
WAKE_MARGIN = RATE // 10  # of the wake phrase's end, kept for the open-speech recognizer


class TurnTrace(BaseModel):
    """One voice turn. Times are `time.monotonic()` seconds; `*_sample` are stream positions."""

    woke_by: Literal["wake_word", "follow_up", "always"] = "always"
    speech_start_sample: int | None = None
    speech_end_sample: int | None = Field(None, description="Where the VAD put the end of speech.")
    ended_by: Literal["early", "hangover", "cut", "eof"] | None = None
    eos: float | None = Field(None, description="When the frame holding the end of speech was fed.")
    endpoint: float | None = None
    asr_final: float | None = None
    route: float | None = None
    first_token: float | None = None
    first_audio: float | None = None
    generated: float | None = Field(None, description="When the reply text was complete (the LLM finished).")
    first_sentence: float | None = Field(None, description="When the first sentence went to speech synthesis.")
    done: float | None = None
    transcript: str = ""
    source: Literal["command", "free", "text", "none"] = "none"
    reason: str = ""
    intent: str | None = None
    reply: str = ""
    barge_in: str | None = Field(None, description="The phrase that interrupted this reply, if any.")
    barge_in_stop_ms: float | None = Field(None, description="End of that phrase to playback stopped.")

    def breakdown_ms(self) -> dict[str, float]:
        """Stage by stage from the end of speech: what the user waits for."""
        marks = [("endpoint", self.endpoint), ("asr_final", self.asr_final), ("route", self.route),
                 ("first_token", self.first_token), ("first_audio", self.first_audio)]  # fmt: skip
        out: dict[str, float] = {}
        prev = self.eos
        for name, t in marks:
            if t is not None and prev is not None:
                out[name] = round((t - prev) * 1000, 1)
                prev = t
        if self.first_audio is not None and self.eos is not None:
            out["eos_to_first_audio"] = round((self.first_audio - self.eos) * 1000, 1)
        return out


class VoiceLoop:
    def __init__(
        self,
        assistant: Assistant,
        recognizer: Recognizer,
        endpointer: Endpointer,
        tts: Synthesizer,
        speaker: Speaker,
        spotter: Spotter | None = None,
        *,
        cfg: AssistantConfig | None = None,
        on_trace: Callable[[TurnTrace], None] | None = None,
    ):
        self.assistant, self.recognizer, self.endpointer = assistant, recognizer, endpointer
        self.tts, self.speaker, self.spotter = tts, speaker, spotter
        self.cfg = cfg or assistant.cfg
        self.session = Session()
        self.state: State = "idle"
        self.position = 0
        self.ring = RingBuffer(RATE * max(2, self.cfg.audio.preroll_ms // 1000 + 2))
        self.traces: list[TurnTrace] = []
        self.on_trace = on_trace
        self._fed: deque[tuple[int, float]] = deque(maxlen=RATE * 30 // FRAME)  # (end sample, wall time)
        self._follow_until = -1
        self._trace = TurnTrace()
        self._listen_from = 0
        self._heard = False
        self._last_partial = ""
        self._cancel = threading.Event()
        self._turn: threading.Thread | None = None
        self._turn_done = threading.Event()
        self._turn_done.set()
        self._tts_q: queue.Queue[tuple[str, str, TurnTrace | None]] = queue.Queue()  # (op, text, trace)
        self._spoken: deque[tuple[float, str]] = deque(maxlen=8)
        self._tts_idle = threading.Event()
        self._tts_idle.set()
        self._closed = False
        self._tts_thread = threading.Thread(target=self._speak_loop, name="tts", daemon=True)
        self._tts_thread.start()
        self._wake = self.cfg.wake_word.phrase.lower()
        self._preroll = self.cfg.audio.preroll_ms * RATE // 1000
        self._contended = False
        self._spotting = False
        speaker.prepare(tts.rate)
        assistant.on_announcement(lambda skill, text: self.say(text))

    # --- input ---------------------------------------------------------------------------------------

    def feed(self, frame: np.ndarray) -> None:
        """One 32 ms frame of 16 kHz int16 audio."""
        now = time.monotonic()
        self.ring.write(frame)
        self.position += len(frame)
        self._fed.append((self.position, now))
        event = self.endpointer.process(frame)
        spot = self._spot(frame, event)
        if self.state == "responding":
            self._while_responding(spot)
        elif self.state == "idle":
            self._while_idle(spot, event)
        else:
            self._while_listening(frame, spot, event)

    def _spot(self, frame: np.ndarray, event: VadEvent | None) -> Spot | None:
        """The spotter hears speech only, from a little before the VAD's start to its end.

        Noise between utterances would pull its running feature means away from speech (measured:
        after 10 s of noise, 0-2 of 6 wake words were heard; gated, 6 of 6). It also saves CPU.
        """
        if self.spotter is None:
            return None
        if event is not None and event.kind == "start":
            if self._spotting:
                self.spotter.reset()
            self._spotting = True
            return self.spotter.accept(self.ring.since(max(0, event.sample - self._preroll // 2)))
        if not self._spotting:
            return None
        spot = self.spotter.accept(frame)
        if not self.endpointer.in_speech:  # ended, cut, or reset by the loop
            self.spotter.reset()
            self._spotting = False
        return spot

    def run(self, frames: Iterable[np.ndarray]) -> None:
        for frame in frames:
            if self._closed:
                return
            self.feed(frame)

    def end_of_input(self, timeout: float = 120) -> None:
        """The stream ended (a file): finish a pending utterance and wait for the reply."""
        if self.state == "listening":
            self._finish("eof", self.position if not self.endpointer.in_speech else self.endpointer.last_speech)
        self.wait_idle(timeout)

    def wait_idle(self, timeout: float = 120) -> bool:
        """Until the turn and its audio are done (for headless runs and tests)."""
        deadline = time.monotonic() + timeout
        while not self._quiet():
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.005)
        if self.state == "responding":
            self._end_turn()
        return True

    def backlog(self, frames: int) -> None:
        """The live capture reports how far behind we are: the LLM yields cores while the ASR catches up."""
        engine = self.assistant.engine
        if engine is None:
            return
        t = self.cfg.engine.threads
        if frames > 3 and not self._contended:
            engine.set_threads(t.contended, t.contended)
            self._contended = True
        elif frames == 0 and self._contended:
            engine.set_threads(t.target, t.target_batch)
            self._contended = False

    # --- states -------------------------------------------------------------------------------------

    def _while_idle(self, spot: Spot | None, event: VadEvent | None) -> None:
        if spot is not None and self._is_wake(spot):
            self._listen_after(spot)
            return
        open_window = self.position <= self._follow_until or self.session.expecting_answer
        if event is not None and event.kind == "start" and (open_window or not self._wake_required):
            start = max(0, event.sample - self._preroll // 2)
            self._listen(start, "follow_up" if open_window else "always", heard=True)

    @property
    def _wake_required(self) -> bool:
        return self.cfg.wake_word.enabled and self.spotter is not None

    def _is_wake(self, spot: Spot) -> bool:
        return spot.phrase == self._wake and self._wake_required

    def _listen_after(self, spot: Spot) -> None:
        """A new command starts at the wake phrase (the recognizer's grammar knows it; it is stripped)."""
        log.info("wake word at %.2f s", (self.position - spot.lag_samples) / RATE)
        # Open speech need not hear the wake phrase again (less to decode); a little is kept in case it ended late.
        phrase = max(0, spot.start_lag_samples - spot.lag_samples - WAKE_MARGIN)
        self._listen(self.position - spot.start_lag_samples, "wake_word", heard=self.endpointer.in_speech, skip=phrase)

    def _listen(self, start: int, woke_by: str, heard: bool, skip: int = 0) -> None:
        self.state = "listening"
        self._trace = TurnTrace(woke_by=woke_by)  # type: ignore[arg-type]
        self._listen_from = start
        self._heard = heard
        self._last_partial = ""
        if heard:
            self._trace.speech_start_sample = start
        self.recognizer.start(skip)
        backlog = self.ring.since(start)
        for i in range(0, len(backlog), FRAME):
            self.recognizer.accept(backlog[i : i + FRAME])

    def _while_listening(self, frame: np.ndarray, spot: Spot | None, event: VadEvent | None) -> None:
        # Speech in the follow-up window may still begin with the wake word: start after it.
        if self._trace.woke_by == "follow_up" and spot is not None and self._is_wake(spot):
            self._drop_utterance()
            self._listen_after(spot)
            return
        self.recognizer.accept(frame)
        if event is not None and event.kind == "start":
            self._heard = True
            self._trace.speech_start_sample = event.sample
        elif event is not None and self._heard:
            self._finish("hangover" if event.kind == "end" else "cut", event.sample)
            return
        if not self._heard:
            if self.position - self._listen_from > self.cfg.vad.start_timeout_s * RATE:
                log.info("no speech after the wake word")
                self._drop_utterance()
                self.state = "idle"
            return
        if self.endpointer.in_speech and self.endpointer.silence_ms >= self.cfg.vad.early_end_ms:
            partial = strip_wake(self.recognizer.partial(), self._wake)
            if (
                partial
                and partial == self._last_partial
                and is_command(
                    self.assistant.router, partial, expecting_answer=self.session.expecting_answer, complete=True
                )
            ):
                self.endpointer.reset()
                self._finish("early", self.endpointer.last_speech)
                return
            self.recognizer.pause()
            self._last_partial = partial

    def _drop_utterance(self) -> None:
        """End an utterance nobody will answer, without its free pass (a neural decode costs ~0.5 s)."""
        self.recognizer.final(skip_free=lambda _: True)

    def _finish(self, ended_by: str, end_sample: int) -> None:
        trace = self._trace
        trace.ended_by = ended_by  # type: ignore[assignment]
        trace.speech_end_sample = end_sample
        trace.eos = self._wall_at(end_sample)
        trace.endpoint = time.monotonic()
        woke = trace.woke_by == "wake_word"

        def unwoken(t: Transcript | None) -> Transcript | None:
            return t.model_copy(update={"text": strip_wake(t.text, self._wake)}) if t is not None and woke else t

        def command_taken(command: Transcript | None) -> bool:  # then no free pass is needed
            return accept(unwoken(command), self.assistant.router, self.cfg.asr.min_confidence,
                          expecting_answer=self.session.expecting_answer)[0]  # fmt: skip

        rec = self.recognizer.final(speech_end=end_sample - self._listen_from, skip_free=command_taken)
        trace.asr_final = time.monotonic()
        rec = Recognition(command=unwoken(rec.command), free=unwoken(rec.free))
        ok, why = accept(rec.command, self.assistant.router, self.cfg.asr.min_confidence,
                         expecting_answer=self.session.expecting_answer)  # fmt: skip
        if ok and rec.command is not None:
            trace.transcript, trace.source = rec.command.text, "command"
        elif rec.free is not None and self._free_is_speech(rec.free.text, trace):
            trace.transcript, trace.source = rec.free.text, "free"
        else:
            why = f"{why}; free pass {rec.free.text if rec.free else ''!r} taken for noise"
        trace.reason = why
        if not trace.transcript:
            log.info("nothing recognized (%s)", why)
            trace.done = time.monotonic()
            self._record(trace)
            self.state = "idle"
            return
        log.info("heard %r (%s: %s)", trace.transcript, trace.source, why)
        self._respond(trace)

    def _free_is_speech(self, text: str, trace: TurnTrace) -> bool:
        """Whether free text without a command match goes on to the router and the LLM.

        Without the wake word (follow-up window, or no wake word configured) a single word is noise:
        bursts of noise decode to one word ("thigh", "poop"; 3 of 3 measured) and would start an LLM
        turn. Answers to a question ("yes") reach the skill through the command grammar.
        """
        n = len(words_of(text))
        return n >= 2 or (n == 1 and (trace.woke_by == "wake_word" or self.session.expecting_answer))

    def inject_text(self, text: str, timeout: float = 120, *, wait: bool = True) -> TurnTrace:
        """A turn from text (ASR skipped), spoken through the same TTS path."""
        now = time.monotonic()
        trace = TurnTrace(transcript=text, source="text", reason="injected text", eos=now, endpoint=now, asr_final=now)
        self._trace = trace
        self._respond(trace)
        if wait:
            self.wait_idle(timeout)
        return trace

    def _respond(self, trace: TurnTrace) -> None:
        self.state = "responding"
        self._cancel = threading.Event()
        self._turn_done.clear()
        self._turn = threading.Thread(target=self._run_turn, args=(trace, self._cancel), name="turn", daemon=True)
        self._turn.start()

    def _while_responding(self, spot: Spot | None) -> None:
        if spot is not None and not self._echo(spot):
            self._barge_in(spot)
            return
        if self._quiet():
            self._end_turn()

    def _quiet(self) -> bool:
        """The turn is over and nothing is left to say or play."""
        return self._turn_done.is_set() and self._tts_idle.is_set() and self._tts_q.empty() and not self.speaker.playing

    def _end_turn(self) -> None:
        self.state = "idle"
        self._follow_until = self.position + int(self.cfg.wake_word.follow_up_window_s * RATE)
        self.endpointer.reset()

    # --- barge-in -------------------------------------------------------------------------------------

    def _echo(self, spot: Spot) -> bool:
        """The spotter heard words the assistant itself is saying, or said until a second ago (the
        time is where each sentence ends in the speaker's queue, not when it was queued: a long
        reply's later sentences play seconds after they are synthesized)."""
        now = time.monotonic()
        words = set(words_of(spot.phrase))
        return any(now < end + 1.0 and words <= set(words_of(text)) for end, text in self._spoken)

    def _barge_in(self, spot: Spot) -> None:
        self._cancel.set()
        self.speaker.stop()
        self._spoken.clear()  # what was queued will not be heard
        trace = self._trace
        trace.barge_in = spot.phrase
        trace.barge_in_stop_ms = round((time.monotonic() - self._wall_at(self.position - spot.lag_samples)) * 1000, 1)
        log.info("barge-in: %r", spot.phrase)
        if self._turn is not None:
            self._turn.join(timeout=2)
        self._tts_idle.wait(2)
        self.speaker.stop()
        if spot.phrase == self._wake:
            self._listen_after(spot)
        else:
            self.state = "idle"
            self.endpointer.reset()

    # --- replies ----------------------------------------------------------------------------------------

    def _run_turn(self, trace: TurnTrace, cancel: threading.Event) -> None:
        splitter = SentenceSplitter()
        first = [True]

        def on_text(piece: str) -> None:
            if first[0]:
                trace.first_token = time.monotonic()
                first[0] = False
            if cancel.is_set():
                return
            for sentence in splitter.feed(piece):
                self._enqueue(sentence, trace)

        try:
            started = time.monotonic()  # routing happens first inside ask(); its timing says how long it took
            result: TurnResult = self.assistant.ask(trace.transcript, self.session, on_text=on_text, cancel=cancel)
            trace.route = started + result.timings_ms.get("route", 0) / 1000
            trace.generated = time.monotonic()
            trace.intent = result.route.intent
            trace.reply = result.text
            if not cancel.is_set():
                for sentence in splitter.flush():
                    self._enqueue(sentence, trace)
        except Exception:  # the loop must survive anything a turn does
            log.exception("turn failed")
        finally:
            self._tts_q.put(("end", "", trace))
            self._turn_done.set()

    def _enqueue(self, sentence: str, trace: TurnTrace) -> None:
        if trace.first_sentence is None:
            trace.first_sentence = time.monotonic()
        self._tts_idle.clear()
        self._tts_q.put(("say", sentence, trace))

    def say(self, text: str) -> None:
        """Speak outside a turn (announcements such as a timer going off)."""
        self._tts_idle.clear()
        self._tts_q.put(("say", text, None))
        self._tts_q.put(("end", "", None))

    def _speak_loop(self) -> None:
        while True:
            op, text, trace = self._tts_q.get()
            if op == "quit":
                return
            if op == "end":
                if trace is not None:
                    trace.done = time.monotonic()
                    self._record(trace)
                if self._tts_q.empty():
                    self._tts_idle.set()
                continue
            if trace is not None and trace.barge_in is not None:
                continue
            try:
                audio = self.tts.synthesize(text)
            except Exception:
                log.exception("speech synthesis failed for %r", text)
                continue
            if trace is not None and trace.barge_in is not None:
                continue
            # When this sentence will have been heard: after what is queued before it, plus its own length.
            start = max(time.monotonic(), self._spoken[-1][0] if self._spoken else 0.0)
            self._spoken.append((start + len(audio) / self.tts.rate, text))
            self.speaker.play(audio, self.tts.rate)
            if trace is not None and trace.first_audio is None:
                trace.first_audio = time.monotonic()

    def _record(self, trace: TurnTrace) -> None:
        if any(t is trace for t in self.traces):
            return
        self.traces.append(trace)
        del self.traces[:-100]
        log.info("turn trace %s", json.dumps(trace.breakdown_ms()))
        path = self.cfg.logging.trace_file
        if path is not None:
            with Path(path).open("a") as f:
                f.write(trace.model_dump_json() + "\n")
        if self.on_trace is not None:
            self.on_trace(trace)

    def _wall_at(self, sample: int) -> float:
        """When the frame holding stream position `sample` was fed."""
        for end, t in self._fed:
            if end >= sample:
                return t
        return time.monotonic()

    def close(self) -> None:
        self._closed = True
        self._cancel.set()
        self.speaker.stop()
        self._tts_q.put(("quit", "", None))
        self._tts_thread.join(timeout=2)
