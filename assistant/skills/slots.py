"""Typed slots: a regex fragment over normalized words, and a parser from the matched words to a value.

Values are plain JSON types so routes print, log and compare without conversion:
numbers are int/float, durations are seconds, times "HH:MM", dates ISO "YYYY-MM-DD".
Spelled numbers are converted by `text2num`, so "twenty five" and "25" are the same slot value.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from text_to_num import alpha2digit

from assistant.text import normalize

_UNITS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve",
          "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen"]  # fmt: skip
_TENS = ["twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]
_SCALES = ["hundred", "thousand", "million"]
_ORDINALS = ["first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth", "ninth", "tenth",
             "eleventh", "twelfth", "thirteenth", "fourteenth", "fifteenth", "sixteenth", "seventeenth",
             "eighteenth", "nineteenth", "twentieth", "thirtieth"]  # fmt: skip
NUMBER_WORDS = frozenset(_UNITS + _TENS + _SCALES + ["point"])

_W = "(?:" + "|".join(sorted(_UNITS + _TENS + _SCALES, key=len, reverse=True)) + ")"
_DIGITS = r"-?\d+(?:\.\d+)?"
# "twenty five", "one hundred and twenty", "two point five", "25", "a hundred"
NUMBER = rf"(?:{_DIGITS}|(?:an? (?={_W}))?{_W}(?: (?:and |point )?{_W})*)"
_SIGN_WORD = r"(?:-|minus|negative) ?"
_SIGN = re.compile(rf"{_SIGN_WORD}(?=\S)")
SIGNED_NUMBER = rf"(?:{_SIGN_WORD})?{NUMBER}"  # a Number slot's: '-6 celsius', 'minus six degrees'
_ORD = "(?:" + "|".join(sorted(_ORDINALS, key=len, reverse=True)) + ")"
ORDINAL = rf"(?:\d{{1,2}}(?:st|nd|rd|th)?|(?:twenty |thirty )?{_ORD}|{_W})"
_UNIT_NAMES = {
    "second": 1, "seconds": 1, "sec": 1, "secs": 1, "minute": 60, "minutes": 60, "min": 60, "mins": 60,
    "hour": 3600, "hours": 3600, "hr": 3600, "hrs": 3600, "day": 86400, "days": 86400,
}  # fmt: skip
_UNIT = "(?:" + "|".join(sorted(_UNIT_NAMES, key=len, reverse=True)) + ")"
_ATOM = rf"(?:{NUMBER}|an?) {_UNIT}"
DURATION = (
    rf"(?:(?:{_ATOM})(?:,? (?:and )?(?:{_ATOM}))*(?: and a half)?"
    rf"|{NUMBER} and a half {_UNIT}|half an? hour|(?:a )?quarter (?:of )?an hour)"
)
_DAYPART = r"(?: ?(?:am|pm|a m|p m|a\.m|p\.m)| o'?clock| in the (?:morning|afternoon|evening)| at night| tonight)"
TIME = (
    rf"(?:noon|midday|midnight|(?:half|quarter|{NUMBER}(?: minutes?)?) (?:past|after|to|before) {NUMBER}{_DAYPART}?"
    rf"|\d{{1,2}}:\d{{2}}{_DAYPART}?|{NUMBER}(?: (?:oh )?{NUMBER})?{_DAYPART}?)"
)
_WEEKDAYS = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]
_MONTHS = ["january", "february", "march", "april", "may", "june", "july", "august", "september", "october",
           "november", "december"]  # fmt: skip
_WD = "(?:" + "|".join(_WEEKDAYS) + ")"
_MO = "(?:" + "|".join(_MONTHS) + ")"
DATE = (
    rf"(?:today|tomorrow|yesterday|the day after tomorrow|(?:(?:next|this|on|last) )?{_WD}"
    rf"|{_MO} (?:the )?{ORDINAL}|(?:the )?{ORDINAL} (?:of )?{_MO})"
)


def to_digits(text: str) -> str:
    """Spelled numbers to digits ("twenty five" -> "25"), isolated ones included."""
    text = re.sub(r"\ban? (?=hundred|thousand|million)", "one ", text)
    return alpha2digit(text, "en", threshold=0)


def parse_number(text: str) -> int | float | None:
    """'twenty five', '2.5', 'two and a half'; signed: 'minus 6', 'negative six', '- 6' (normalized '-6')."""
    sign = _SIGN.match(text.strip())
    if sign:
        value = parse_number(text.strip()[sign.end() :])
        return None if value is None else -value
    converted = to_digits(text.strip())
    half = converted.endswith(" and a half")
    if half:
        converted = converted[: -len(" and a half")]
    try:
        value = float(converted.replace(" ", ""))
    except ValueError:
        return None
    value += 0.5 if half else 0.0
    return int(value) if value.is_integer() else value


class Slot:
    """Base of all slot types. Subclass with a `pattern` and `parse` for a custom type.

    `required` slots that a matched utterance leaves out are asked for with `prompt`
    on the next turn (slot filling across turns, no wake word needed).
    """

    kind = "slot"
    pattern = r".+?"

    def __init__(self, *, required: bool = False, prompt: str | None = None, description: str = ""):
        self.required = required
        self.prompt = prompt
        self.description = description

    def parse(self, text: str, now: dt.datetime) -> Any | None:
        """The value for the matched words, or None if they are not one (the template then does not match)."""
        return text

    def sample(self) -> str:
        """Words that parse as this slot: used for ASR phrase lists and the load-time conflict check."""
        return "something"

    def samples(self) -> list[str]:
        """Varied spoken values, for the ASR's command language model; empty for free text."""
        return [self.sample()]

    def vocabulary(self) -> set[str]:
        """Words this slot can contain (for an ASR grammar)."""
        return set()

    def resolve(self, settings: Any) -> Slot:
        """A copy with values that depend on configuration filled in (see `Enum`)."""
        return self


class Number(Slot):
    kind = "number"
    pattern = SIGNED_NUMBER

    def __init__(self, *, minimum: float | None = None, maximum: float | None = None, **kw: Any):
        super().__init__(**kw)
        self.minimum, self.maximum = minimum, maximum

    def parse(self, text: str, now: dt.datetime) -> int | float | None:
        value = parse_number(text)
        if value is None:
            return None
        if (self.minimum is not None and value < self.minimum) or (self.maximum is not None and value > self.maximum):
            return None
        return value

    def sample(self) -> str:
        return "five"

    def samples(self) -> list[str]:
        return [*_UNITS[1:], *_TENS, "twenty five", "one hundred", "two point five", "a thousand"]

    def vocabulary(self) -> set[str]:
        return set(NUMBER_WORDS) | {"and", "a", "an"}


class Duration(Slot):
    """A length of time, in seconds."""

    kind = "duration"
    pattern = DURATION

    def parse(self, text: str, now: dt.datetime) -> int | float | None:
        # text2num reads "one second" as "1 2nd": name the unit so it cannot be an ordinal.
        t = to_digits(re.sub(r"\bseconds?\b", "secs", text))
        if re.fullmatch(r"half an? hour", t):
            return 1800
        if re.fullmatch(r"(?:a )?quarter (?:of )?an hour", t):
            return 900
        m = re.fullmatch(rf"(\d+(?:\.\d+)?) and a half ({_UNIT})", t)
        if m:
            return _whole(float(m.group(1)) + 0.5, _UNIT_NAMES[m.group(2)])
        total = 0.0
        last_unit = 0
        for number, unit in re.findall(rf"(\d+(?:\.\d+)?|an?) ({_UNIT})\b", t):
            last_unit = _UNIT_NAMES[unit]
            total += (1.0 if number in ("a", "an") else float(number)) * last_unit
        if not last_unit:
            return None
        if t.endswith("and a half"):
            total += 0.5 * last_unit
        return _whole(total, 1) if total > 0 else None

    def sample(self) -> str:
        return "five minutes"

    def samples(self) -> list[str]:
        units = ["second", "minute", "hour"]
        out = [f"{n} {u}s" for n in ["two", "five", "ten", "fifteen", "twenty", "thirty", "forty five"] for u in units]
        return [*out, "one minute", "a minute", "an hour", "one second", "half an hour", "an hour and a half",
                "one minute and thirty seconds", "two and a half minutes", "ninety seconds"]  # fmt: skip

    def vocabulary(self) -> set[str]:
        return Number().vocabulary() | set(_UNIT_NAMES) | {"half", "quarter", "of"}


def _whole(value: float, scale: int) -> int | float:
    seconds = value * scale
    return int(seconds) if float(seconds).is_integer() else seconds


class Time(Slot):
    """A time of day, as "HH:MM" (24-hour)."""

    kind = "time"
    pattern = TIME

    def parse(self, text: str, now: dt.datetime) -> str | None:
        t = to_digits(text).replace("a.m", "am").replace("p.m", "pm").replace("a m", "am").replace("p m", "pm")
        if t in ("noon", "midday"):
            return "12:00"
        if t == "midnight":
            return "00:00"
        pm = bool(re.search(r"\b(pm|afternoon|evening|night|tonight)\b", t))
        am = bool(re.search(r"\b(am|morning)\b", t))
        core = re.sub(r" ?(?:am|pm|o'?clock|in the (?:morning|afternoon|evening)|at night|tonight)$", "", t).strip()
        m = re.fullmatch(r"(half|quarter|\d+)(?: minutes?)? (past|after|to|before) (\d+)", core)
        if m:
            minutes = {"half": 30, "quarter": 15}.get(m.group(1)) or int(m.group(1))
            hour = int(m.group(3))
            if m.group(2) in ("to", "before"):
                hour, minutes = hour - 1, 60 - minutes
        else:
            m = re.fullmatch(r"(\d{1,2})(?:[: ](?:oh |0)?(\d{1,2}))?", core)
            if not m:
                return None
            hour, minutes = int(m.group(1)), int(m.group(2) or 0)
        if pm and hour < 12:
            hour += 12
        if am and hour == 12:
            hour = 0
        if not (0 <= hour < 24 and 0 <= minutes < 60):
            return None
        return f"{hour:02d}:{minutes:02d}"

    def sample(self) -> str:
        return "seven pm"

    def samples(self) -> list[str]:
        return ["seven pm", "six thirty", "noon", "midnight", "half past six", "quarter to eight", "ten o'clock",
                "seven fifteen am", "eleven forty five pm", "five oh five"]  # fmt: skip

    def vocabulary(self) -> set[str]:
        return Number().vocabulary() | {
            "am",
            "pm",
            "oh",
            "o'clock",
            "noon",
            "midnight",
            "half",
            "quarter",
            "past",
            "to",
        }


class Date(Slot):
    """A calendar date relative to now, as ISO "YYYY-MM-DD"."""

    kind = "date"
    pattern = DATE

    def parse(self, text: str, now: dt.datetime) -> str | None:
        t = to_digits(text)
        today = now.date()
        relative = {"today": 0, "tomorrow": 1, "yesterday": -1, "the day after tomorrow": 2}
        if t in relative:
            return (today + dt.timedelta(days=relative[t])).isoformat()
        m = re.fullmatch(rf"(?:(next|this|on|last) )?({_WD})", t)
        if m:
            ahead = (_WEEKDAYS.index(m.group(2)) - today.weekday()) % 7
            if m.group(1) == "next" and ahead == 0:
                ahead = 7
            if m.group(1) == "last":
                ahead = ahead - 7 if ahead else -7
            return (today + dt.timedelta(days=ahead)).isoformat()
        m = re.fullmatch(rf"({_MO}) (?:the )?(\d{{1,2}})(?:st|nd|rd|th)?", t) or re.fullmatch(
            rf"(?:the )?(\d{{1,2}})(?:st|nd|rd|th)? (?:of )?({_MO})", t
        )
        if not m:
            return None
        month_word, day = (m.group(1), m.group(2)) if not m.group(1).isdigit() else (m.group(2), m.group(1))
        try:
            date = dt.date(today.year, _MONTHS.index(month_word) + 1, int(day))
        except ValueError:
            return None
        return date.isoformat()

    def sample(self) -> str:
        return "tomorrow"

    def samples(self) -> list[str]:
        return ["today", "tomorrow", "yesterday", *_WEEKDAYS, "next friday", "the first of december",
                "march third", "the twenty second"]  # fmt: skip

    def vocabulary(self) -> set[str]:
        return set(_WEEKDAYS) | set(_MONTHS) | set(_ORDINALS) | {"today", "tomorrow", "yesterday", "next", "the", "of"}


EnumSource = Sequence[str] | Mapping[str, str]


class Enum(Slot):
    """One of a fixed set of phrases; a mapping gives synonyms (phrase -> canonical value).

    `source` reads the values from the skill's validated settings at load, so integrators
    can list their devices, rooms or languages in the TOML file.
    """

    kind = "enum"

    def __init__(
        self, values: EnumSource | None = None, *, source: Callable[[Any], EnumSource] | None = None, **kw: Any
    ):
        super().__init__(**kw)
        self.source = source
        self.values: dict[str, str] = {}
        if values is not None:
            self._set(values)

    def _set(self, values: EnumSource) -> None:
        pairs = values.items() if isinstance(values, Mapping) else ((v, v) for v in values)
        self.values = {normalize(k): v for k, v in pairs if normalize(k)}
        alternatives = sorted(self.values, key=len, reverse=True)
        self.pattern = (
            "(?:" + "|".join(re.escape(v).replace("'", "'?") for v in alternatives) + ")" if alternatives else "(?!)"
        )

    def resolve(self, settings: Any) -> Enum:
        if self.source is None:
            return self
        copy = Enum(self.source(settings), required=self.required, prompt=self.prompt, description=self.description)
        return copy

    def parse(self, text: str, now: dt.datetime) -> str | None:
        return self.values.get(text) or self.values.get(text.replace("'", ""))

    def sample(self) -> str:
        return next(iter(self.values), "nothing")

    def samples(self) -> list[str]:
        return list(self.values)

    def vocabulary(self) -> set[str]:
        return {w for v in self.values for w in v.split()}


class Text(Slot):
    """Free text; `validate` may convert it or return None to reject (then the template does not match)."""

    kind = "text"

    def __init__(self, *, validate: Callable[[str], Any] | None = None, examples: Sequence[str] = (), **kw: Any):
        super().__init__(**kw)
        self.validate = validate
        self.examples = [normalize(e) for e in examples]

    def samples(self) -> list[str]:
        """`examples` if given; without them such templates need free recognition."""
        return list(self.examples)

    def parse(self, text: str, now: dt.datetime) -> Any | None:
        if self.validate is None:
            return text
        return self.validate(text)


SLOT_TYPES: dict[str, type[Slot]] = {
    "number": Number, "duration": Duration, "time": Time, "date": Date, "enum": Enum, "text": Text
}  # fmt: skip
