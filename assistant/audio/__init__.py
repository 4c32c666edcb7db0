"""Audio in and out: microphone and speaker through sounddevice, WAV files, voice activity.

Everything downstream consumes 16 kHz mono int16 frames of `FRAME` samples (32 ms, Silero's window),
whatever the device or file delivers.
"""

from assistant.audio.io import (
    FRAME,
    RATE,
    AudioError,
    BufferSpeaker,
    Microphone,
    PacedSpeaker,
    SoundDeviceSpeaker,
    Speaker,
    frames,
    read_wav,
    resample,
    to_int16,
    write_wav,
)
from assistant.audio.ring import RingBuffer
from assistant.audio.vad import Endpointer, SileroVad, Vad, WebRtcVad, load_vad

__all__ = [
    "FRAME",
    "RATE",
    "AudioError",
    "BufferSpeaker",
    "Endpointer",
    "Microphone",
    "PacedSpeaker",
    "RingBuffer",
    "SileroVad",
    "SoundDeviceSpeaker",
    "Speaker",
    "Vad",
    "WebRtcVad",
    "frames",
    "load_vad",
    "read_wav",
    "resample",
    "to_int16",
    "write_wav",
]
