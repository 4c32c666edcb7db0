"""The voice loop: microphone frames in, spoken replies out, around the same `Assistant.ask`.

- `loop.py`: `VoiceLoop` (states, turn worker, TTS thread, barge-in) and `TurnTrace`;
- `commands.py`: the command grammar from the skills' phrases and the check that accepts a command;
- `build.py`: `build_voice`, which assembles a loop from the configuration.
"""

from assistant.voice.loop import TurnTrace, VoiceLoop

__all__ = ["TurnTrace", "VoiceLoop"]
