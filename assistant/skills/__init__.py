"""The public plugin API for skill developers (see the README's "Writing a skill")."""

from assistant.engine.types import ChatMessage
from assistant.skills.api import (
    PERMISSIONS,
    Context,
    FollowUp,
    Generation,
    Handler,
    Intent,
    NothingToDo,
    Permission,
    PermissionDenied,
    Reply,
    Skill,
    SkillError,
)
from assistant.skills.capabilities import LLM, Device, HomeCommand, HomeControl, HomeError, describe, spoken_name
from assistant.skills.slots import Date, Duration, Enum, Number, Slot, Text, Time, to_digits

__all__ = [
    "LLM",
    "PERMISSIONS",
    "ChatMessage",
    "Context",
    "Date",
    "Device",
    "Duration",
    "Enum",
    "FollowUp",
    "Generation",
    "Handler",
    "HomeCommand",
    "HomeControl",
    "HomeError",
    "Intent",
    "Number",
    "Permission",
    "NothingToDo",
    "PermissionDenied",
    "Reply",
    "Skill",
    "SkillError",
    "Slot",
    "Text",
    "Time",
    "describe",
    "spoken_name",
    "to_digits",
]
