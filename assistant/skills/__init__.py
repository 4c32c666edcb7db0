"""The public plugin API for skill developers (see the README's "Writing a skill")."""

from assistant.skills.api import (
    PERMISSIONS,
    Context,
    FollowUp,
    Generation,
    Handler,
    Intent,
    Permission,
    PermissionDenied,
    Reply,
    Skill,
    SkillError,
)
from assistant.skills.capabilities import HomeCommand, HomeError
from assistant.skills.slots import Date, Duration, Enum, Number, Slot, Text, Time

__all__ = [
    "PERMISSIONS",
    "Context",
    "Date",
    "Duration",
    "Enum",
    "FollowUp",
    "Generation",
    "Handler",
    "HomeCommand",
    "HomeError",
    "Intent",
    "Number",
    "Permission",
    "PermissionDenied",
    "Reply",
    "Skill",
    "SkillError",
    "Slot",
    "Text",
    "Time",
]
