"""espeak-ng from the `espeakng-loader` wheel (library + voice data, no apt), through ctypes.

espeak-ng keeps global state, so one synthesizer per process, guarded by a lock.
"""

from __future__ import annotations

import ctypes
import threading
from typing import Any

import numpy as np

from assistant.tts.base import TtsError, gain

_AUDIO_OUTPUT_SYNCHRONOUS = 2
_CHARS_UTF8 = 1
_RATE_PARAM, _VOLUME_PARAM = 1, 2
_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)
_LOCK = threading.Lock()
_STATE: dict[str, Any] = {}


class _Voice(ctypes.Structure):
    """espeak_VOICE; `languages` is (priority byte, tag, NUL) repeated, ending with a zero byte."""

    _fields_ = [("name", ctypes.c_char_p), ("languages", ctypes.c_void_p), ("identifier", ctypes.c_char_p),
                ("gender", ctypes.c_ubyte), ("age", ctypes.c_ubyte), ("variant", ctypes.c_ubyte),
                ("xx1", ctypes.c_ubyte), ("score", ctypes.c_int), ("spare", ctypes.c_void_p)]  # fmt: skip


def _languages(voice: _Voice) -> list[str]:
    out, addr = [], voice.languages
    while addr and ctypes.c_ubyte.from_address(addr).value:  # priority byte, then the tag
        tag = ctypes.string_at(addr + 1)
        out.append(tag.decode().lower())
        addr += len(tag) + 2
    return out


def _select(lib: Any, voice: str) -> bool:
    """By voice name (en-us, ko), else by a voice's language tag (en-gb is the voice named "en")."""
    if lib.espeak_SetVoiceByName(voice.encode()) == 0:
        return True
    lib.espeak_ListVoices.restype = ctypes.POINTER(ctypes.POINTER(_Voice))
    voices = lib.espeak_ListVoices(None)
    i = 0
    while voices[i]:
        v = voices[i].contents
        if voice.lower() in _languages(v):
            return bool(lib.espeak_SetVoiceByName(v.name) == 0)
        i += 1
    return False


def _library() -> tuple[Any, int]:
    if "lib" not in _STATE:
        try:
            import espeakng_loader
        except ImportError as e:
            raise TtsError(
                "tts.engine = 'espeak' needs the espeakng-loader package: pip install espeakng-loader"
            ) from e
        lib = ctypes.CDLL(espeakng_loader.get_library_path())
        lib.espeak_Initialize.restype = ctypes.c_int
        rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, espeakng_loader.get_data_path().encode(), 0)
        if rate <= 0:
            raise TtsError(f"espeak-ng failed to initialize with data from {espeakng_loader.get_data_path()}")
        chunks: list[np.ndarray] = []

        def collect(wav: Any, n: int, events: Any) -> int:
            if n > 0:
                chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
            return 0

        cb = _CALLBACK(collect)
        lib.espeak_SetSynthCallback(cb)
        _STATE.update(lib=lib, rate=rate, chunks=chunks, cb=cb, voice=None)
    return _STATE["lib"], _STATE["rate"]


class EspeakSynthesizer:
    def __init__(self, voice: str = "en-us", rate_wpm: int = 175, volume: float = 1.0):
        with _LOCK:
            lib, self.rate = _library()
            if not _select(lib, voice):
                raise TtsError(f"tts.voice = {voice!r} is not an espeak-ng voice (e.g. en-us, en-gb, ko, de, fr)")
            _STATE["voice"] = voice
        self.voice, self.rate_wpm, self.volume = voice, rate_wpm, volume

    def synthesize(self, text: str) -> np.ndarray:
        data = text.encode()
        with _LOCK:
            lib, _ = _library()
            chunks: list[np.ndarray] = _STATE["chunks"]
            chunks.clear()
            if _STATE["voice"] != self.voice:
                _select(lib, self.voice)
                _STATE["voice"] = self.voice
            lib.espeak_SetParameter(_RATE_PARAM, self.rate_wpm, 0)
            err = lib.espeak_Synth(
                ctypes.c_char_p(data), ctypes.c_size_t(len(data) + 1), 0, 0, 0, _CHARS_UTF8, None, None
            )
            lib.espeak_Synchronize()
            if err != 0:
                raise TtsError(f"espeak-ng synthesis failed (error {err})")
            audio = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int16)
        return gain(audio, self.volume)
