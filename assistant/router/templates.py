"""Sentence templates compiled to anchored regular expressions over normalized words.

Syntax (as in Home Assistant's hassil): `(a|b c)` alternatives, `[optional words]`,
`{slot}` a typed slot of the intent. "set [a] timer for {duration}" matches
"set timer for 5 minutes" and "set a timer for five minutes".
"""

from __future__ import annotations

import datetime as dt
import itertools
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from assistant.skills.slots import Slot, Text
from assistant.text import normalize


class TemplateError(ValueError):
    """A template that cannot be compiled; the message names the template and the problem."""


# --- parsing ------------------------------------------------------------------


@dataclass
class _Word:
    text: str


@dataclass
class _SlotRef:
    name: str


@dataclass
class _Alt:
    options: list[list[Any]]
    optional: bool = False


def _parse(template: str) -> list[Any]:
    tokens = re.findall(r"[^\s()\[\]|{}]+\[[^\s\]]+\]|\{[^{}]*\}|[()\[\]|]|[^\s()\[\]|{}]+", template)
    pos = 0

    def sequence(closers: str) -> list[Any]:
        nonlocal pos
        items: list[Any] = []
        while pos < len(tokens) and tokens[pos] not in closers:
            tok = tokens[pos]
            pos += 1
            if tok in "([":
                close = ")" if tok == "(" else "]"
                options = [sequence("|" + close)]
                while pos < len(tokens) and tokens[pos] == "|":
                    pos += 1
                    options.append(sequence("|" + close))
                if pos >= len(tokens) or tokens[pos] != close:
                    raise TemplateError(f"template {template!r}: '{tok}' is never closed with '{close}'")
                pos += 1
                items.append(_Alt(options, optional=tok == "["))
            elif tok in ")]|":
                raise TemplateError(f"template {template!r}: unexpected '{tok}'")
            elif tok.endswith("]"):  # a word with an optional suffix: timer[s]
                stem, suffix = tok[:-1].split("[", 1)
                items.append(_Alt([[_Word(normalize(stem))], [_Word(normalize(stem + suffix))]]))
            elif tok.startswith("{"):
                name = tok[1:-1].strip()
                if not name.isidentifier():
                    raise TemplateError(f"template {template!r}: slot name {name!r} is not an identifier")
                items.append(_SlotRef(name))
            else:
                items.extend(_Word(w) for w in normalize(tok).split())
        return items

    items = sequence("")
    if pos != len(tokens):
        raise TemplateError(f"template {template!r}: unexpected '{tokens[pos]}'")
    if not items:
        raise TemplateError(f"template {template!r} is empty")
    return items


# --- compiling ----------------------------------------------------------------


@dataclass
class Template:
    """One compiled template of one intent."""

    source: str
    intent: str
    skill: str
    slots: dict[str, Slot]
    regex: re.Pattern[str]
    groups: dict[str, str]  # regex group -> slot name
    items: list[Any] = field(repr=False, default_factory=list)

    def match(self, normalized: str, now: dt.datetime) -> tuple[float, dict[str, Any]] | None:
        """(specificity score, slot values) if the whole utterance matches and every slot parses."""
        m = self.regex.fullmatch(normalized + " ")
        if m is None:
            return None
        values: dict[str, Any] = {}
        weight = 0.0
        for group, name in self.groups.items():
            span = m.group(group)
            if span is None:
                continue
            slot = self.slots[name]
            value = slot.parse(span.strip(), now)
            if value is None:
                return None
            values[name] = value
            # Words a slot absorbed count less than literal words: free text least of all.
            weight += len(span) * (0.9 if isinstance(slot, Text) and slot.validate is None else 0.2)
        total = len(normalized) + 1
        return (total - weight) / total, values

    def expansions(self, limit: int = 64) -> list[str]:
        """Sentences this template accepts, slots filled with sample words."""
        return list(itertools.islice(_expand(self.items, self.slots), limit))

    def spoken(self, limit: int = 64) -> list[str]:
        """Sentences with every slot's sample values rotated through: the ASR's command corpus.

        Empty when a slot takes free text (any words), which a command grammar cannot cover.
        """
        values = {name: slot.samples() for name, slot in self.slots.items()}
        if any(not v for v in values.values()):
            return []
        out: dict[str, None] = {}
        shapes = _expand(self.items, {n: _Placeholder(n) for n in self.slots})
        for shape in itertools.islice(shapes, limit):
            rounds = max((len(values[n]) for n in values if f"\x00{n}\x00" in shape), default=1)
            for i in range(rounds):
                text = shape
                for name, vals in values.items():
                    text = text.replace(f"\x00{name}\x00", vals[i % len(vals)])
                out[text] = None
        return list(out)

    def literal_words(self) -> set[str]:
        words: set[str] = set()
        _collect_words(self.items, words)
        return words


class _Placeholder(Slot):
    """Stands for a slot in a sentence shape; `Template.spoken` fills in the values."""

    def __init__(self, name: str):
        super().__init__()
        self.name = name

    def sample(self) -> str:
        return f"\x00{self.name}\x00"


def _expand(items: list[Any], slots: dict[str, Slot]) -> Iterator[str]:
    if not items:
        yield ""
        return
    head, rest = items[0], items[1:]
    heads: Iterable[str]
    if isinstance(head, _Word):
        heads = [head.text]
    elif isinstance(head, _SlotRef):
        heads = [slots[head.name].sample()]
    else:
        heads = itertools.chain([""] if head.optional else [], *(_expand(opt, slots) for opt in head.options))
    for h in heads:
        for tail in _expand(rest, slots):
            yield " ".join(p for p in (h, tail) if p)


def _collect_words(items: list[Any], out: set[str]) -> None:
    for it in items:
        if isinstance(it, _Word):
            out.add(it.text)
        elif isinstance(it, _Alt):
            for opt in it.options:
                _collect_words(opt, out)


def compile_template(source: str, *, intent: str, skill: str, slots: dict[str, Slot]) -> Template:
    items = _parse(source)
    groups: dict[str, str] = {}
    counter = itertools.count()

    def emit(seq: list[Any]) -> str:
        out = ""
        for it in seq:
            if isinstance(it, _Word):
                out += re.escape(it.text).replace("'", "'?") + " "
            elif isinstance(it, _SlotRef):
                if it.name not in slots:
                    known = ", ".join(sorted(slots)) or "none"
                    raise TemplateError(
                        f"template {source!r} of intent '{intent}' uses slot {{{it.name}}}, "
                        f"which the intent does not declare (declared: {known})"
                    )
                group = f"s{next(counter)}"
                groups[group] = it.name
                out += f"(?P<{group}>{slots[it.name].pattern}) "
            else:
                body = "|".join(emit(opt) for opt in it.options)
                out += f"(?:{body}){'?' if it.optional else ''}"
        return out

    pattern = emit(items)
    try:
        regex = re.compile(pattern)
    except re.error as exc:
        raise TemplateError(f"template {source!r} of intent '{intent}' does not compile: {exc}") from None
    return Template(source, intent, skill, slots, regex, groups, items)
