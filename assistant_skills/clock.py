"""Clock: the time and the date."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator

from assistant.skills import Context, Date, Skill


class ClockSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    timezone: str | None = Field(None, description="IANA zone, e.g. 'Europe/Paris'; unset uses the system's.")

    @field_validator("timezone")
    @classmethod
    def _known(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                ZoneInfo(value)
            except (ZoneInfoNotFoundError, ValueError):
                raise ValueError(f"unknown time zone {value!r}; use an IANA name such as 'Europe/Paris'") from None
        return value


skill = Skill("clock", description="Tells the time and the date.", settings=ClockSettings)


def _now(ctx: Context) -> dt.datetime:
    zone = ctx.settings.timezone
    return ctx.now.astimezone(ZoneInfo(zone)) if zone else ctx.now


def spoken_time(t: dt.datetime) -> str:
    hour = t.hour % 12 or 12
    suffix = "AM" if t.hour < 12 else "PM"
    return f"{hour} {suffix}" if t.minute == 0 else f"{hour}:{t.minute:02d} {suffix}"


def spoken_date(d: dt.date) -> str:
    return f"{d:%A}, {d:%B} {d.day}"


@skill.intent(
    "time",
    templates=[
        "what time is it [now|right now]",
        "what's the [current] time [now|right now]",
        "what is the [current] time [now|right now]",
        "(tell me|do you know|give me) the [current] time",
        "[the] [current] time please",
        "do you have the time",
        "what time do you have",
    ],
    examples=["what's the hour", "is it late already", "look at the clock", "how early is it"],
)
def tell_time(ctx: Context) -> str:
    """Say the current time."""
    return f"It's {spoken_time(_now(ctx))}."


@skill.intent(
    "date",
    templates=[
        "what's [the] [today's] date [today]",
        "what is [the] [today's] date [today]",
        "what's today's date",
        "what day is (it|today) [today]",
        "what's the date {date}",
        "what (is|was|will be) the date {date}",
        "what day (is|was|will be) {date}",
        "what day of the week (is it|is today|is {date})",
        "(tell me|do you know) [the] [today's] date",
        "what's the date (on|for) {date}",
        "which day is {date}",
    ],
    slots={"date": Date()},
    examples=["what's today", "which date is it", "is today monday"],
)
def tell_date(ctx: Context) -> str:
    """Say today's date, or the weekday of a given date."""
    today = _now(ctx).date()
    if "date" in ctx.slots:
        day = dt.date.fromisoformat(ctx.slots["date"])
        delta = (day - today).days
        when = {0: "Today", 1: "Tomorrow", -1: "Yesterday"}.get(delta)
        verb = "is" if delta >= 0 else "was"
        return f"{when} {verb} {spoken_date(day)}." if when else f"That {verb} a {spoken_date(day)}."
    return f"Today is {spoken_date(today)}."
