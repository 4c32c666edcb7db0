"""Calculator and unit conversion. Arithmetic is parsed with `ast` (numbers and operators only,
never `eval`); units and their conversions come from `pint`."""

from __future__ import annotations

import ast
import math
import operator
import re
from functools import cache
from typing import Any

from assistant.skills import Context, Enum, NothingToDo, Number, Skill, Text, to_digits

skill = Skill("calculator", description="Arithmetic and unit conversions.")

# Spoken operators -> Python operators, longest phrases first.
_WORDS = [
    ("to the power of", "**"), ("multiplied by", "*"), ("divided by", "/"), ("square root of", "sqrt "),
    ("percent of", "/100*"), ("squared", "**2"), ("cubed", "**3"), ("times", "*"), ("plus", "+"),
    ("minus", "-"), ("over", "/"), ("x", "*"), ("and", "+"),
    ("a half of", "0.5*"), ("half of", "0.5*"), ("a third of", "1/3*"), ("1 3rd of", "1/3*"), ("a 3rd of", "1/3*"),
    ("a quarter of", "0.25*"), ("1 quarter of", "0.25*"), ("double", "2*"), ("twice", "2*"), ("triple", "3*"),
]  # fmt: skip
_BINARY: dict[type, Any] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
    ast.Pow: operator.pow, ast.Mod: operator.mod,
}  # fmt: skip


def _evaluate(node: ast.AST) -> float:
    if isinstance(node, ast.Expression):
        return _evaluate(node.body)
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
        return float(node.value)
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _evaluate(node.left), _evaluate(node.right)
        if isinstance(node.op, ast.Pow) and abs(right) > 100:
            raise ValueError("exponent too large")
        return float(_BINARY[type(node.op)](left, right))
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        value = _evaluate(node.operand)
        return -value if isinstance(node.op, ast.USub) else value
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id == "sqrt"
        and len(node.args) == 1
    ):
        return math.sqrt(_evaluate(node.args[0]))
    raise ValueError("not arithmetic")


def parse_expression(text: str) -> float | None:
    """The value of a spoken or typed arithmetic expression, or None if it is not one."""
    t = " " + to_digits(re.sub(r"^the ", "", text)) + " "
    for word, op in _WORDS:
        t = t.replace(f" {word} ", f" {op} ")
    t = re.sub(r"sqrt\s+(\d+(?:\.\d+)?)", r"sqrt(\1)", t).strip()
    if not re.fullmatch(r"[\d.\s+\-*/()%sqrt]+", t) or not re.search(r"\d", t) or not re.search(r"[+\-*/]|sqrt", t):
        return None
    try:
        return _evaluate(ast.parse(t, mode="eval"))
    except (SyntaxError, ValueError, ZeroDivisionError, OverflowError, TypeError, RecursionError, MemoryError):
        return None  # '1+1+...+1' a thousand terms deep is not a sum anyone says: not a calculation


def spoken_number(value: float) -> str:
    if math.isclose(value, round(value), abs_tol=1e-9):
        return f"{round(value):,}".replace(",", " ") if abs(value) >= 1e4 else str(round(value))
    return f"{value:.6g}"


_EXPRESSION = Text(
    validate=parse_expression,
    # Spoken arithmetic for the speech recognizer's command grammar.
    examples=["seven times eight", "two plus two", "twelve divided by four", "one hundred minus seven",
              "fifteen percent of eighty", "the square root of sixteen", "three squared", "nine times nine",
              "six times seven", "two to the power of ten", "forty two divided by six", "five plus three"],
)  # fmt: skip

# Spoken unit -> pint unit.
UNITS = {
    "meter": "meter", "meters": "meter", "metre": "meter", "metres": "meter", "kilometer": "kilometer",
    "kilometers": "kilometer", "km": "kilometer", "centimeter": "centimeter", "centimeters": "centimeter",
    "millimeter": "millimeter", "millimeters": "millimeter", "mile": "mile", "miles": "mile", "foot": "foot",
    "feet": "foot", "inch": "inch", "inches": "inch", "yard": "yard", "yards": "yard", "gram": "gram",
    "grams": "gram", "kilogram": "kilogram", "kilograms": "kilogram", "kilo": "kilogram", "kilos": "kilogram",
    "pound": "pound", "pounds": "pound", "ounce": "ounce", "ounces": "ounce", "liter": "liter", "liters": "liter",
    "litre": "liter", "litres": "liter", "milliliter": "milliliter", "milliliters": "milliliter",
    "gallon": "gallon", "gallons": "gallon", "cup": "cup", "cups": "cup", "celsius": "degC",
    "degrees celsius": "degC", "fahrenheit": "degF", "degrees fahrenheit": "degF", "kelvin": "kelvin",
    "hour": "hour", "hours": "hour", "minute": "minute", "minutes": "minute", "second": "second",
    "seconds": "second", "day": "day", "days": "day", "week": "week", "weeks": "week",
    "kilometers per hour": "km/hour", "miles per hour": "mile/hour", "mph": "mile/hour",
}  # fmt: skip
_PLURAL = {v: k for k, v in UNITS.items() if k.endswith("s") and not k.startswith("degrees")}


@cache
def _registry() -> Any:
    import pint  # half a second to import and build: only when the first conversion is asked for

    return pint.UnitRegistry()


@skill.intent(
    "calculate",
    templates=[
        "(what is|what's|how much is|calculate|compute|what does) {expression} [equal|make]",
        "{expression}",
        "what (is|are) {expression}",
    ],
    slots={"expression": _EXPRESSION},
    examples=["do a quick sum: four and five", "help me with some math: nine times six"],
)
def calculate(ctx: Context) -> str:
    """Evaluate arithmetic."""
    value = ctx.slots.get("expression")  # the LLM classifier may choose this intent for text with no sum in it
    if value is None:
        raise NothingToDo("I can work out sums like seven times eight, but I found no numbers to calculate in that.")
    return f"That's {spoken_number(value)}."


_UNIT = Enum(UNITS)


@skill.intent(
    "convert",
    templates=[
        "convert {amount} {unit} (to|into|in) {target}",
        "(what is|what's|how much is) {amount} {unit} in {target}",
        "{amount} {unit} (in|to) {target}",
        "how many {target} (are|is) (in|there in) {amount} {unit}",
        "how many {target} in {amount} {unit}",
        "how many {target} (are|is) [there] in (a|an) {unit}",  # amount 1
        "how many {target} in (a|an) {unit}",
    ],
    slots={"amount": Number(), "unit": _UNIT, "target": _UNIT},
    examples=["how heavy is ten pounds in kilograms"],
)
def convert(ctx: Context) -> str:
    """Convert between units of length, mass, volume, temperature, time and speed."""
    import pint

    unit, target = ctx.slots.get("unit"), ctx.slots.get("target")
    amount = ctx.slots.get("amount", 1)  # "how many grams are in a kilogram"
    if unit is None or target is None or amount is None or unit == target:
        raise NothingToDo(
            "Please say the amount, its unit and the unit you want, like: convert five miles to kilometers."
        )
    ureg = _registry()
    try:
        result = ureg.Quantity(amount, unit).to(target).magnitude
    except pint.DimensionalityError:
        return f"I can't convert {_PLURAL.get(unit, unit)} to {_PLURAL.get(target, target)}."
    src = _PLURAL.get(unit, unit) if amount != 1 else unit
    converted = spoken_number(round(result, 4))
    return f"{spoken_number(amount)} {_name(src)} is {converted} {_name(_PLURAL.get(target, target))}."


def _name(unit: str) -> str:
    return {"degC": "degrees Celsius", "degF": "degrees Fahrenheit", "km/hour": "kilometers per hour",
            "mile/hour": "miles per hour"}.get(unit, unit)  # fmt: skip
