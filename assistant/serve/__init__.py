"""Serving the assistant to other programs on the network: `wyoming.py`, Home Assistant's voice protocol."""

from assistant.serve.wyoming import WyomingServer

__all__ = ["WyomingServer"]
