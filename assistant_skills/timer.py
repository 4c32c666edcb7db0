"""Timers: set, cancel and list; a timer announces itself when it is done."""

from __future__ import annotations

import itertools
import threading

from assistant.skills import Context, Duration, Reply, Skill, Text

skill = Skill("timer", description="Kitchen-style countdown timers that announce when done.", permissions=["timers"])

_KEYS = threading.Lock()
_DURATION = Duration(required=True, prompt="For how long?")
_NAME = Text(validate=lambda t: t if len(t.split()) <= 3 and t not in ("a", "an", "the", "my") else None)


def spoken_duration(seconds: float) -> str:
    seconds = round(seconds)
    parts = []
    for unit, size in (("hour", 3600), ("minute", 60), ("second", 1)):
        n, seconds = divmod(seconds, size)
        if n:
            parts.append(f"{n} {unit}{'s' if n != 1 else ''}")
    if not parts:
        return "0 seconds"
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


@skill.intent(
    "set",
    templates=[
        "(set|start|create|make) [me] [a|an|the|one] timer [for {duration}]",
        "(set|start|create|make) [me] [a|an] {duration} timer",
        "(set|start|create) [me] [a|an|the] {name} timer [for {duration}]",
        "(set|start|create) [me] [a|an] timer (called|named|for) {name} for {duration}",
        "[a] timer for {duration}",
        "{duration} timer",
        "(remind|tell) me in {duration}",
        "count down [from] {duration}",
        "wake me in {duration}",
    ],
    slots={"duration": _DURATION, "name": _NAME},
    examples=[
        "begin a countdown of two minutes",
        "alert me after twenty minutes",
        "i want a timer for the oven",
        "ring when six minutes are up",
    ],  # fmt: skip
)
def set_timer(ctx: Context) -> str:
    """Start a countdown timer."""
    seconds = ctx.slots["duration"]
    if seconds <= 0 or seconds > 24 * 3600:
        return "Timers can run from one second to one day."
    length = spoken_duration(seconds)
    name = ctx.slots.get("name")
    label = f"{name} timer" if name else f"{length} timer"
    with _KEYS:  # handlers of concurrent callers run at once: pick and take a key in one step
        running = {key for key, _, _ in ctx.scheduled()}
        if name:
            ctx.schedule(seconds, f"Your {label} is done.", key=name)  # the same name starts that timer over
            return f"Okay, the {label} starts over: {length}." if name in running else f"Okay, {label} starting now."
        # Never a running timer's key: after '#1' fired, a new one must not take '#2' while '#2' runs.
        n = next(i for i in itertools.count(1) if f"{length} timer #{i}" not in running)
        ctx.schedule(seconds, f"Your {label} is done.", key=f"{length} timer #{n}")
    return f"Okay, {length}, starting now."


@skill.intent(
    "cancel",
    templates=[
        "(cancel|stop|delete|remove|clear) [the|my|all] [of] [the|my] timer[s]",
        "(cancel|stop|delete|remove) [the|my] {name} timer",
        "turn off [the|my] timer[s]",
    ],
    slots={"name": _NAME},
    examples=["forget the timer", "i don't need the countdown anymore"],
)
def cancel_timer(ctx: Context) -> str:
    """Cancel one or all timers."""
    pending = ctx.scheduled()
    if not pending:
        return "There are no timers running."
    name = ctx.slots.get("name")
    if name:
        matching = [key for key, _, _ in pending if key == name]
        if not matching:
            return f"There is no {name} timer."
        ctx.cancel_scheduled(matching[0])
        return f"Cancelled the {name} timer."
    for key, _, _ in pending:
        ctx.cancel_scheduled(key)
    return "Cancelled the timer." if len(pending) == 1 else f"Cancelled all {len(pending)} timers."


@skill.intent(
    "list",
    templates=[
        "how (much time|long) is left [on [the|my] timer[s]]",
        "how long (until|till|before) [the|my] timer [goes off|is done|rings]",
        "(list|show) [me] [all] [my|the] timers",
        "what timers (do i have|are running|are set)",
        "(are there|do i have) any timers [running|set]",
        "check [the|my] timer[s]",
    ],
    examples=["is the timer still going", "how much longer on the countdown"],
)
def list_timers(ctx: Context) -> Reply:
    """Say which timers run and how long each has left."""
    pending = ctx.scheduled()
    if not pending:
        return Reply(text="There are no timers running.", data={"timers": []})
    parts = [f"{spoken_duration(left)} left on the {key.split(' #')[0]}" for key, left, _ in pending]
    data = {"timers": [{"name": k, "seconds_left": round(left, 1)} for k, left, _ in pending]}
    return Reply(text="; ".join(parts).capitalize() + ".", data=data)
