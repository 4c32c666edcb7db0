"""The Wyoming server (`assistant serve --wyoming`): Home Assistant's voice protocol over one TCP port.

One connection is one job, as Home Assistant opens them: `describe` -> `info`; `transcribe` + audio ->
`transcript` (our recognizer with the skills' command grammar, the neural pass for open speech);
`transcript` -> `handled` (the skills, the router, the LLM: one `Assistant.ask`, with the server's
conversation kept across connections); `synthesize` -> audio (sentence by sentence); `detect` + audio ->
`detection` / `not-detected` (the configured wake word, a spotter per connection). The models are the
device's own, loaded once; blocking work runs on threads so the event loop keeps reading.

Wyoming carries no credentials: the server listens on loopback unless configured, and then answers only
the addresses in `wyoming.allowed_clients`.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from importlib.metadata import version
from typing import Literal, TypeVar

import numpy as np
from wyoming.asr import Transcribe, Transcript
from wyoming.audio import AudioChunk, AudioChunkConverter, AudioStart, AudioStop
from wyoming.error import Error
from wyoming.event import Event, async_read_event
from wyoming.handle import Handled, NotHandled
from wyoming.info import (
    AsrModel,
    AsrProgram,
    Attribution,
    Describe,
    HandleModel,
    HandleProgram,
    Info,
    TtsProgram,
    TtsVoice,
    WakeModel,
    WakeProgram,
)
from wyoming.server import AsyncEventHandler, AsyncTcpServer
from wyoming.tts import Synthesize
from wyoming.wake import Detect, Detection, NotDetected

from assistant.asr import Recognizer, Spotter, load_recognizer, load_spotter
from assistant.audio import FRAME, RATE, Endpointer, load_vad
from assistant.config.schema import WyomingConfig
from assistant.modelstore import ModelStore
from assistant.pipeline import Assistant, Session
from assistant.tts import SentenceSplitter, Synthesizer, load_tts
from assistant.voice.commands import accept, voice_corpus

log = logging.getLogger("assistant.serve.wyoming")
T = TypeVar("T")
_ATTRIBUTION = Attribution(name="assistant", url="https://pypi.org/project/assistant/")
_CHUNK = 1024  # samples per audio chunk sent (64 ms at 16 kHz)
AUDIO_IDLE_S = 10.0  # a client that stops sending mid-utterance gives the recognizer back after this
_SESSIONS = 16  # conversations kept (one per Home Assistant conversation or satellite)
APOLOGY = "Sorry, something went wrong."


class WyomingServer:
    """Our wake word, recognizer, voice and skills as Wyoming services; `start` listens on a thread."""

    def __init__(self, assistant: Assistant, cfg: WyomingConfig | None = None):
        self.assistant = assistant
        self.cfg = cfg or assistant.cfg.wyoming
        acfg = assistant.cfg
        self.recognizer: Recognizer = load_recognizer(acfg, voice_corpus(acfg, assistant.router))
        self.vad = load_vad(acfg.vad)  # where speech ends in what a client sends (its VAD leaves a tail)
        self.tts: Synthesizer = load_tts(acfg.tts, ModelStore.from_config(acfg))
        self.wake_phrase = acfg.wake_word.phrase.lower()
        self.sessions: OrderedDict[str, Session] = OrderedDict()  # by conversation, least recently used first
        self.turns = ThreadPoolExecutor(1, thread_name_prefix="wyoming-turn")  # turns queue here, not in audio's
        self.asr_lock = asyncio.Lock()  # one utterance at a time through the recognizer (made in start's loop)
        self._tts_lock = threading.Lock()
        self._turn_lock = threading.Lock()
        self.info = self._describe()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle ----------------------------------------------------------------------------------------

    def start(self) -> None:
        """Listen on a thread of its own; returns once the port is open (raises if it cannot be)."""
        ready = threading.Event()
        failure: list[BaseException] = []

        def main() -> None:
            try:
                asyncio.run(self._serve(ready))
            except BaseException as exc:  # reported to start(), or logged after it returned
                failure.append(exc)
                log.error("the Wyoming server stopped: %s", exc)
                ready.set()

        self._thread = threading.Thread(target=main, name="wyoming", daemon=True)
        self._thread.start()
        ready.wait()
        if failure:
            raise failure[0]

    def wait(self) -> None:
        """Block until the server stops (Ctrl-C in the CLI)."""
        if self._thread is not None:
            while self._thread.is_alive():
                self._thread.join(0.5)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stop(self) -> None:
        if self.running and self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(10)
        self.turns.shutdown(wait=False, cancel_futures=True)

    async def _serve(self, ready: threading.Event) -> None:
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        self.asr_lock = asyncio.Lock()
        server = AsyncTcpServer(self.cfg.host, self.cfg.port)
        await server.start(lambda reader, writer: _Connection(self, reader, writer))
        log.info("Wyoming server on %s:%d", self.cfg.host, self.cfg.port)
        ready.set()
        await self._stop.wait()
        await server.stop()

    def allows(self, peer: str) -> bool:
        from assistant.config.schema import is_loopback

        try:
            address = ipaddress.ip_address(peer)
            peer = str(getattr(address, "ipv4_mapped", None) or address)  # "::ffff:10.0.0.5" is 10.0.0.5
        except ValueError:
            pass
        return is_loopback(peer) if not self.cfg.allowed_clients else peer in self.cfg.allowed_clients

    def session(self, context: dict[str, object] | None) -> Session:
        """The conversation of Home Assistant's conversation id, else of the satellite or device; one per key,
        so a pending question (a confirmation above all) is answered only where it was asked."""
        ctx = context or {}
        key = str(ctx.get("conversation_id") or ctx.get("satellite_id") or ctx.get("device_id") or "")
        session = self.sessions.pop(key, None) or Session()
        self.sessions[key] = session
        while len(self.sessions) > _SESSIONS:
            self.sessions.popitem(last=False)
        return session

    # --- the services' blocking parts (run on threads) --------------------------------------------------

    def utterance(self) -> _Utterance:
        self.vad.reset()
        self.recognizer.start()
        cfg = self.assistant.cfg
        return _Utterance(self.recognizer, Endpointer(self.vad, cfg.vad), cfg.audio.preroll_ms, cfg.vad.hangover_ms)

    def transcript(self, speech_end: int | None) -> str:
        """The finished utterance: the command grammar's words if they make a command, else the open-speech pass.
        The audio after `speech_end` (the client's trailing silence or noise) is not decoded as words."""
        rec = self.recognizer.final(speech_end=speech_end)
        router, min_conf = self.assistant.router, self.assistant.cfg.asr.min_confidence
        ok, why = accept(rec.command, router, min_conf)
        if ok and rec.command is not None:
            return rec.command.text
        log.info("not a command (%s): the open-speech pass is the transcript", why)
        return rec.free.text if rec.free is not None else ""

    def handle(self, text: str, context: dict[str, object] | None = None) -> tuple[bool, str]:
        """(handled, reply) of one turn. Not handled: no skill took it or it failed (Home Assistant may ask
        another agent)."""
        with self._turn_lock:
            turn = self.assistant.ask(text, self.session(context))
        log.info("%r -> %s (%s): %r", text[:80], turn.route.intent, turn.route.reason, turn.text[:80])
        return turn.route.intent is not None and turn.error is None, turn.text

    def synthesize(self, sentence: str) -> np.ndarray:
        with self._tts_lock:  # one voice, one sentence at a time
            return self.tts.synthesize(sentence)

    def spotter(self) -> Spotter:
        """A wake-word spotter for one stream (a satellite streams for hours; spotters keep state)."""
        cfg = self.assistant.cfg
        ww = cfg.wake_word.model_copy(update={"stop_phrases": []})  # barge-in phrases are the device loop's
        return load_spotter(cfg.model_copy(update={"wake_word": ww}), learn=False)

    def _describe(self) -> Info:
        cfg = self.assistant.cfg
        lang, v, by = [cfg.asr.language.split("-")[0]], version("assistant"), _ATTRIBUTION
        free = cfg.asr.resolved_free_model
        asr = f"{cfg.asr.engine} + {free}" if free else cfg.asr.engine
        tts = cfg.tts.resolved_engine + (f" {cfg.tts.voice}" if cfg.tts.resolved_engine == "espeak" else "")
        intents = ", ".join(sorted(self.assistant.router.intents))
        info = Info(
            asr=[AsrProgram(
                name="assistant-asr", description="Speech recognition with the skills' command grammar",
                attribution=by, installed=True, version=v,
                models=[AsrModel(name=asr, description="command grammar and open speech", attribution=by,
                                 installed=True, version=v, languages=lang)],
            )],
            tts=[TtsProgram(
                name="assistant-tts", description="The assistant's voice, sentence by sentence",
                attribution=by, installed=True, version=v,
                voices=[TtsVoice(name=tts, description="the configured voice", attribution=by, installed=True,
                                 version=v, languages=lang)],
            )],
            handle=[HandleProgram(
                name="assistant-skills", description="The assistant's skills, router and on-device LLM",
                attribution=by, installed=True, version=v, supports_home_control=bool(cfg.home.devices),
                models=[HandleModel(name="skills", description=intents, attribution=by, installed=True, version=v,
                                    languages=lang)],
            )],
        )  # fmt: skip
        if cfg.wake_word.enabled:
            ww = cfg.wake_word
            info.wake = [WakeProgram(
                name="assistant-wake", description="The device's wake word", attribution=by, installed=True,
                version=v,
                models=[WakeModel(name=ww.phrase.lower().replace(" ", "_"), description=f"{ww.engine} wake word",
                                  attribution=by, installed=True, version=v, languages=lang, phrase=ww.phrase)],
            )]  # fmt: skip
        return info


class _Connection(AsyncEventHandler):
    """One client connection: its job follows from the first request event."""

    def __init__(self, server: WyomingServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        super().__init__(reader, writer)
        self.server = server
        peer = writer.get_extra_info("peername")
        self.peer = str(peer[0]) if peer else ""
        self.mode: Literal["asr", "wake"] = "asr"
        self.language: str | None = None
        self.converter = AudioChunkConverter(rate=RATE, width=2, channels=1)
        self.pending = np.empty(0, np.int16)
        self.spotter: Spotter | None = None
        self.detected = False
        self.holds_asr = False
        self.utterance: _Utterance | None = None

    async def run(self) -> None:
        """The library's loop, plus: refused peers, and an utterance whose client went quiet is given up."""
        if not self.server.allows(self.peer):
            log.warning("Wyoming connection from %s refused: not in wyoming.allowed_clients", self.peer)
            self.writer.close()
            return
        try:
            while True:
                idle = AUDIO_IDLE_S if self.utterance is not None else None
                try:
                    event = await asyncio.wait_for(async_read_event(self.reader), idle)
                except TimeoutError:
                    log.warning("Wyoming client %s sent no audio for %.0f s mid-utterance: closed", self.peer, idle)
                    break
                if event is None or not await self.handle_event(event):
                    break
        finally:
            await self.disconnect()
            self.writer.close()

    async def disconnect(self) -> None:
        self._release_asr()

    async def _blocking(self, fn: Callable[..., T], *args: object) -> T:
        return await asyncio.get_running_loop().run_in_executor(None, fn, *args)

    async def handle_event(self, event: Event) -> bool:
        try:
            await self._dispatch(event)
        except Exception as exc:  # a bad request or a failing model ends this job, never the server
            log.error("Wyoming %s failed: %s: %s", event.type, type(exc).__name__, exc, exc_info=exc)
            self._release_asr()
            await self.write_event(Error(text=f"{event.type} failed: {type(exc).__name__}: {exc}").event())
        return True

    async def _dispatch(self, event: Event) -> None:
        if Describe.is_type(event.type):
            await self.write_event(self.server.info.event())
        elif Transcribe.is_type(event.type):
            self.mode, self.language = "asr", Transcribe.from_event(event).language
        elif Detect.is_type(event.type):
            self.mode = "wake"
        elif AudioStart.is_type(event.type):
            await self._audio_start()
        elif AudioChunk.is_type(event.type):
            await self._audio(AudioChunk.from_event(event))
        elif AudioStop.is_type(event.type):
            await self._audio_stop()
        elif Transcript.is_type(event.type):
            await self._handle(Transcript.from_event(event))
        elif Synthesize.is_type(event.type):
            await self._speak(Synthesize.from_event(event).text)
        else:
            log.debug("Wyoming event %s ignored", event.type)

    # --- audio in: speech recognition or wake word ---------------------------------------------------------

    async def _audio_start(self) -> None:
        self.converter = AudioChunkConverter(rate=RATE, width=2, channels=1)
        self.pending = np.empty(0, np.int16)
        if self.mode == "wake":
            if self.spotter is None:
                self.spotter = await self._blocking(self.server.spotter)
            self.spotter.reset()
            self.detected = False
            return
        if not self.holds_asr:
            # Released at audio-stop, when the client goes or goes quiet (AUDIO_IDLE_S): never held for long.
            await asyncio.wait_for(self.server.asr_lock.acquire(), 2 * AUDIO_IDLE_S)
            self.holds_asr = True
        self.utterance = await self._blocking(self.server.utterance)

    async def _audio(self, chunk: AudioChunk) -> None:
        audio = np.frombuffer(self.converter.convert(chunk).audio, np.int16)
        self.pending = np.concatenate([self.pending, audio])
        n = len(self.pending) // FRAME * FRAME
        frames, self.pending = self.pending[:n], self.pending[n:]
        if not n:
            return
        if self.mode == "wake":
            spots = await self._blocking(self._spot, frames)
            for lag in spots:
                self.detected = True
                name = self.server.wake_phrase.replace(" ", "_")
                log.info("wake word %r heard (%d ms before the end of the chunk)", name, lag * 1000 // RATE)
                await self.write_event(Detection(name=name, timestamp=chunk.timestamp).event())
        elif self.utterance is not None:
            await self._blocking(self.utterance.add, frames)

    def _spot(self, frames: np.ndarray) -> list[int]:
        assert self.spotter is not None
        lags = []
        for i in range(0, len(frames), FRAME):
            spot = self.spotter.accept(frames[i : i + FRAME])
            if spot is not None and spot.phrase == self.server.wake_phrase:
                lags.append(len(frames) - i - FRAME + spot.lag_samples)
        return lags

    async def _audio_stop(self) -> None:
        if self.mode == "wake":
            if not self.detected:
                await self.write_event(NotDetected().event())
            return
        utterance, self.utterance = self.utterance, None
        text = ""  # a failed utterance still ends with a transcript: Home Assistant waits for one
        try:
            if utterance is not None:
                if len(self.pending):  # the last part-frame, filled with silence
                    last = np.concatenate([self.pending, np.zeros(FRAME - len(self.pending), np.int16)])
                    await self._blocking(utterance.add, last)
                    self.pending = np.empty(0, np.int16)
                speech_end = await self._blocking(utterance.finish)
                text = await self._blocking(self.server.transcript, speech_end)
        finally:
            self._release_asr()
            await self.write_event(Transcript(text=text, language=self.language).event())

    def _release_asr(self) -> None:
        self.utterance = None
        if self.holds_asr:
            self.holds_asr = False
            self.server.asr_lock.release()

    # --- text in: the skills; text out: the voice --------------------------------------------------------

    async def _handle(self, transcript: Transcript) -> None:
        try:
            loop = asyncio.get_running_loop()
            handle = self.server.handle
            handled, reply = await loop.run_in_executor(self.server.turns, handle, transcript.text, transcript.context)
        except Exception as exc:  # the turn never crashes the server: it apologizes
            log.error("turn %r failed: %s: %s", transcript.text[:80], type(exc).__name__, exc, exc_info=exc)
            handled, reply = False, APOLOGY
        context = transcript.context
        event = Handled(text=reply, context=context) if handled else NotHandled(text=reply, context=context)
        await self.write_event(event.event())

    async def _speak(self, text: str) -> None:
        rate = self.server.tts.rate
        await self.write_event(AudioStart(rate=rate, width=2, channels=1).event())
        splitter = SentenceSplitter()
        try:
            for sentence in [*splitter.feed(text), *splitter.flush()]:
                audio = await self._blocking(self.server.synthesize, sentence)
                for i in range(0, len(audio), _CHUNK):
                    piece = audio[i : i + _CHUNK].astype(np.int16).tobytes()
                    await self.write_event(AudioChunk(rate=rate, width=2, channels=1, audio=piece).event())
        finally:
            await self.write_event(AudioStop().event())  # Home Assistant reads until it, error or not


class _Utterance:
    """What the recognizer hears of a client's audio: the speech with the pre-roll and hangover the device's own
    loop keeps, and the pauses within it, but not the long silence or noise a client leaves around it (the
    grammar pass decodes noise as words: "what time is it five")."""

    def __init__(self, recognizer: Recognizer, endpointer: Endpointer, preroll_ms: int, hangover_ms: int):
        self.recognizer, self.endpointer = recognizer, endpointer
        self.preroll = preroll_ms * RATE // 1000 // FRAME
        self.hangover = hangover_ms * RATE // 1000 // FRAME
        self.held: list[np.ndarray] = []  # frames since the last speech frame, not yet heard
        self.fed = 0
        self.speech_end: int | None = None  # samples heard up to the end of the last speech frame

    def add(self, frames: np.ndarray) -> None:
        for i in range(0, len(frames), FRAME):
            frame = frames[i : i + FRAME]
            self.endpointer.process(frame)
            if self.endpointer.probability < self.endpointer.threshold:
                self.held.append(frame)
                continue
            before = self.held if self.speech_end is not None else self.held[max(0, len(self.held) - self.preroll) :]
            for f in [*before, frame]:
                self.recognizer.accept(f)
                self.fed += len(f)
            self.held, self.speech_end = [], self.fed

    def finish(self) -> int | None:
        """Hear the hangover (all of it if no speech was found: the recognizer decides) and say where speech ended."""
        for f in self.held if self.speech_end is None else self.held[: self.hangover]:
            self.recognizer.accept(f)
        return self.speech_end
