"""Open speech with a neural recognizer (Moonshine on ONNX Runtime, or Whisper via faster-whisper),
commands with the grammar.

Neither is streaming: each hears a whole utterance. `NeuralRecognizer` keeps the utterance's audio,
decodes it in a worker thread once speech pauses, and at the end reuses that decode when nothing was
said after it: the end-of-speech hang-over (0.5 s of silence the voice loop waits for) is spent
decoding, not waiting. Commands keep their own recognizer (PocketSphinx with the skills' grammar),
which is faster and exact on the phrases it knows.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import numpy as np

from assistant.asr.base import AsrError, Recognition, Recognizer, Transcript

log = logging.getLogger("assistant.asr")
RATE = 16000


class Transcriber(Protocol):
    """Free recognition of one whole utterance (16 kHz int16), or None when nothing was said."""

    def transcribe(self, audio: np.ndarray) -> Transcript | None: ...


class WhisperTranscriber:
    """faster-whisper (CTranslate2) on the CPU: greedy, English, no timestamps (what a turn needs)."""

    def __init__(self, model_dir: Path, *, threads: int = 1, compute_type: str = "int8"):
        try:
            from faster_whisper import WhisperModel
        except ImportError as e:
            raise AsrError("asr.free_model (Whisper) needs faster-whisper: pip install faster-whisper") from e
        if not (model_dir / "model.bin").is_file():
            raise AsrError(f"{model_dir} holds no CTranslate2 Whisper model (model.bin): see `assistant models list`")
        self.model = WhisperModel(str(model_dir), device="cpu", compute_type=compute_type, cpu_threads=threads)

    def transcribe(self, audio: np.ndarray) -> Transcript | None:
        if len(audio) < RATE // 10:
            return None
        segments, _ = self.model.transcribe(
            audio.astype(np.float32) / 32768.0, language="en", beam_size=1, temperature=0.0,
            condition_on_previous_text=False, without_timestamps=True, vad_filter=False,
        )  # fmt: skip
        kept = [s for s in segments if s.no_speech_prob < 0.6 or s.avg_logprob > -0.5]
        text = " ".join(s.text.strip() for s in kept).strip()
        if not text:
            return None
        # The least certain segment's mean token probability: what a word confidence is elsewhere.
        confidence = min(math.exp(s.avg_logprob) for s in kept)
        return Transcript(text=text, confidence=min(1.0, confidence), grammar=False)


class MoonshineTranscriber:
    """Moonshine (English) on ONNX Runtime: encoder once, then greedy decoding with the merged decoder's
    KV cache. Its compute grows with the utterance (no 30 s window), which suits short turns."""

    START, END = 1, 2
    TOKENS_PER_S = 6.5  # more than any speech carries: a longer output is a loop, cut

    def __init__(self, model_dir: Path, *, threads: int = 1):
        import onnxruntime as ort

        files = {name: model_dir / name for name in ("encoder_model.ort", "decoder_model_merged.ort", "tokenizer.bin")}
        missing = [str(f) for f in files.values() if not f.is_file()]
        if missing:
            raise AsrError(f"Moonshine model files missing: {', '.join(missing)}; see `assistant models list`")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
        cpu = ["CPUExecutionProvider"]
        self.encoder = ort.InferenceSession(str(files["encoder_model.ort"]), opts, providers=cpu)
        self.decoder = ort.InferenceSession(str(files["decoder_model_merged.ort"]), opts, providers=cpu)
        self.pieces = _pieces(files["tokenizer.bin"].read_bytes())
        self.outputs = [o.name for o in self.decoder.get_outputs()]
        self.past = {i.name: i.shape for i in self.decoder.get_inputs() if i.name.startswith("past_key_values.")}
        self.transcribe(np.zeros(RATE // 2, np.int16))  # ONNX Runtime's first run costs ~1.3 s more: pay it here

    def transcribe(self, audio: np.ndarray) -> Transcript | None:
        if len(audio) < RATE // 10:
            return None
        hidden = self.encoder.run(None, {"input_values": (audio.astype(np.float32) / 32768.0)[None]})[0]
        cache = {name: np.zeros((1, shape[1], 0, shape[3]), np.float32) for name, shape in self.past.items()}
        tokens, logprobs = [self.START], []
        for step in range(int(len(audio) / RATE * self.TOKENS_PER_S) + 4):
            out = self.decoder.run(None, {
                "input_ids": np.array([[tokens[-1]]], np.int64), "encoder_hidden_states": hidden,
                "use_cache_branch": np.array([step > 0]), **cache,
            })  # fmt: skip
            logits = out[0][0, -1].astype(np.float64)
            token = int(logits.argmax())
            logprobs.append(float(logits[token] - logits.max() - np.log(np.exp(logits - logits.max()).sum())))
            for name, value in zip(self.outputs[1:], out[1:], strict=True):
                if step == 0 or ".decoder." in name:  # the encoder's keys and values are made once
                    cache[name.replace("present.", "past_key_values.")] = value
            if token == self.END:
                break
            tokens.append(token)
        text = b"".join(self.pieces[t] if t < len(self.pieces) else b"" for t in tokens[1:])
        words = text.decode("utf-8", "replace").replace("\u2581", " ").strip()
        if not words:
            return None
        return Transcript(text=words, confidence=min(1.0, math.exp(sum(logprobs) / len(logprobs))), grammar=False)


def _pieces(data: bytes) -> list[bytes]:
    """Moonshine's tokenizer.bin: each token's bytes, preceded by their length (one byte)."""
    pieces, i = [], 0
    while i < len(data):
        n = data[i]
        pieces.append(data[i + 1 : i + 1 + n])
        i += 1 + n
    return pieces


class NeuralRecognizer:
    """The `Recognizer` for a non-streaming transcriber, with an optional command-grammar recognizer.

    A decode of the buffer starts in a worker thread at each `pause` (the voice loop calls it once
    speech pauses without a complete command). A command the caller takes (`skip_free`) costs no
    free decode at all.
    """

    def __init__(self, transcriber: Transcriber, commands: Recognizer | None = None, *, tail_s: float = 0.15):
        self.transcriber, self.commands = transcriber, commands
        self.tail = int(tail_s * RATE)  # kept after the end of speech: the last word's decay
        self._lock = threading.Condition()
        self._frames: list[np.ndarray] = []
        self._n = 0
        self._inflight = 0  # samples the running decode covers (0: none runs)
        self._decoded: tuple[int, Transcript | None] | None = None  # (samples covered, result)
        self._generation = 0
        self._skip = 0
        self.reused = 0  # finals answered by a decode made while the speech was ending (for bench.asr)

    @property
    def problems(self) -> list[str]:
        return self.commands.problems if self.commands is not None else []

    def start(self, skip: int = 0) -> None:
        with self._lock:  # a decode still running for the last utterance is dropped when it ends
            self._generation += 1
            self._frames, self._n, self._decoded, self._skip = [], 0, None, max(0, skip)
        if self.commands is not None:
            self.commands.start()

    def accept(self, frame: np.ndarray) -> None:
        if self.commands is not None:
            self.commands.accept(frame)
        with self._lock:
            self._frames.append(np.asarray(frame, dtype=np.int16))
            self._n += len(frame)

    def _kick(self) -> None:
        """Decode the whole buffer in the background, unless a decode runs or already covers it (lock held)."""
        covered = self._decoded[0] if self._decoded is not None else 0
        if self._inflight or covered >= self._n or self._n - self._skip < RATE // 4:
            return
        self._inflight = self._n
        audio, generation = self._audio(self._n), self._generation
        args = (audio, self._n, generation)
        threading.Thread(target=self._decode, args=args, name="asr-partial", daemon=True).start()

    def _audio(self, n: int) -> np.ndarray:
        """The utterance's first n samples, less the skipped start (lock held)."""
        if len(self._frames) > 1:
            self._frames = [np.concatenate(self._frames)]
        return self._frames[0][min(self._skip, n) : n] if self._frames else np.zeros(0, np.int16)

    def _decode(self, audio: np.ndarray, n: int, generation: int) -> None:
        result: Transcript | None = None
        try:
            result = self.transcriber.transcribe(audio)
        except Exception:  # a failed partial costs only its reuse: the final decodes again
            log.exception("partial transcription failed")
            generation = -1
        with self._lock:
            if generation == self._generation:
                self._decoded = (n, result)
            self._inflight = 0
            self._lock.notify_all()

    def partial(self) -> str:
        """The command hypothesis (without a grammar: the last free decode)."""
        if self.commands is not None:
            return self.commands.partial()
        with self._lock:
            return self._decoded[1].text if self._decoded is not None and self._decoded[1] is not None else ""

    def pause(self) -> None:
        """Speech paused: decode what was heard so far, in the background."""
        with self._lock:
            self._kick()

    def final(
        self, speech_end: int | None = None, *, skip_free: Callable[[Transcript | None], bool] | None = None
    ) -> Recognition:
        """End the utterance. `speech_end`: samples since `start` where speech stopped (None: all)."""
        command = self.commands.final().command if self.commands is not None else None
        if skip_free is not None and skip_free(command):
            with self._lock:
                self._generation += 1  # a decode in flight is dropped when it ends
            return Recognition(command=command)
        with self._lock:
            while self._inflight:  # the one in flight may already cover the speech
                self._lock.wait()
            end = self._n if speech_end is None else min(self._n, max(0, speech_end) + self.tail)
            decoded, audio = self._decoded, self._audio(end)
            self._generation += 1
        if decoded is not None and decoded[0] >= end:
            self.reused += 1
            return Recognition(command=command, free=decoded[1])
        try:
            free = self.transcriber.transcribe(audio)
        except Exception:  # the turn goes on with what the grammar heard (or nothing), never a crash
            log.exception("open-speech transcription failed")
            free = None
        return Recognition(command=command, free=free)
