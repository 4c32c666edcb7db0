"""Load the embedded default config, overlay the integrator's file, explain every problem."""

from __future__ import annotations

import difflib
import os
import tomllib
import types
import typing
from collections.abc import Iterable, Mapping
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ValidationError

from assistant.config.schema import AssistantConfig

ENV_VAR = "ASSISTANT_CONFIG"
PROFILE_VAR = "ASSISTANT_PROFILE"  # `small` or `standard`, over the file's `profile`
Severity = Literal["error", "warning"]


class ConfigProblem(BaseModel):
    """One thing wrong with a config file, phrased for the person who has to fix it."""

    key: str
    message: str
    fix: str
    severity: Severity = "error"

    def render(self) -> str:
        tag = "" if self.severity == "error" else "warning: "
        return f"{self.key or '(file)'}: {tag}{self.message}\n    fix: {self.fix}"


class ConfigError(Exception):
    """Raised with every problem found, not just the first."""

    def __init__(self, source: str, problems: list[ConfigProblem]):
        self.source = source
        self.problems = problems
        n = len(problems)
        body = "\n".join(p.render() for p in problems)
        super().__init__(f"{source}: {n} problem{'s' if n != 1 else ''}\n{body}")


def default_toml_text() -> str:
    return resources.files("assistant.config").joinpath("default.toml").read_text("utf-8")


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Tables merge key by key; any other value (lists included) replaces the default."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def read_toml(path: Path) -> dict[str, Any]:
    """Parse one TOML file or raise a ConfigError naming the file and the cause."""
    source = str(path)
    if not path.exists():
        raise ConfigError(
            source,
            [
                ConfigProblem(
                    key="",
                    message=f"config file {path} does not exist",
                    fix="check the path, or omit it to use the embedded default",
                )
            ],
        )
    if path.is_dir():
        raise ConfigError(
            source, [ConfigProblem(key="", message=f"{path} is a directory", fix="pass the TOML file inside it")]
        )
    try:
        text = path.read_text("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            source,
            [
                ConfigProblem(
                    key="", message=f"not UTF-8 text ({exc.reason} at byte {exc.start})", fix="save the file as UTF-8"
                )
            ],
        ) from exc
    except OSError as exc:
        raise ConfigError(
            source, [ConfigProblem(key="", message=f"cannot read: {exc.strerror}", fix="check the file's permissions")]
        ) from exc
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(
            source,
            [
                ConfigProblem(
                    key="",
                    message=f"invalid TOML: {exc}",
                    fix="correct the syntax at that line (strings need quotes, tables are [name])",
                )
            ],
        ) from exc


def load_config(
    path: Path | str | None = None, *, env: Mapping[str, str] | None = None, overrides: Mapping[str, Any] | None = None
) -> AssistantConfig:
    """Effective config: embedded default, overlaid by `path` (or $ASSISTANT_CONFIG), then by
    $ASSISTANT_PROFILE and `overrides` (what a command line chose)."""
    env = os.environ if env is None else env
    if path is None and env.get(ENV_VAR):
        path = env[ENV_VAR]
    if env.get(PROFILE_VAR):
        overrides = {"profile": env[PROFILE_VAR], **(overrides or {})}
    defaults = tomllib.loads(default_toml_text())
    if path is None:
        return validate_config(deep_merge(defaults, overrides or {}), source="<embedded default>", base_dir=None)
    file = Path(path).expanduser()
    user = deep_merge(read_toml(file), overrides or {})
    return validate_config(deep_merge(defaults, user), source=str(file), base_dir=file.resolve().parent)


def validate_config(data: Mapping[str, Any], *, source: str, base_dir: Path | None) -> AssistantConfig:
    try:
        return AssistantConfig.model_validate(data, context={"base_dir": base_dir})
    except ValidationError as exc:
        raise ConfigError(source, explain(exc, data, base_dir)) from exc


# --- turning pydantic errors into problems ----------------------------------


def _unwrap(annotation: Any) -> list[Any]:
    """The concrete types behind Optional/Union/Annotated."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _unwrap(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        out: list[Any] = []
        for arg in typing.get_args(annotation):
            if arg is not type(None):
                out.extend(_unwrap(arg))
        return out
    return [annotation]


def _walk(loc: Iterable[int | str]) -> tuple[list[str], type[BaseModel] | None]:
    """Map a pydantic error location to the user's key path and the model owning its last key.

    Union branch tags that pydantic inserts into locations (e.g. ``'int'``) are dropped.
    """
    keys: list[str] = []
    current: list[Any] = [AssistantConfig]
    owner: type[BaseModel] | None = AssistantConfig
    for part in loc:
        nxt: list[Any] = []
        matched = False
        for typ in current:
            origin = typing.get_origin(typ)
            if isinstance(typ, type) and issubclass(typ, BaseModel):
                owner = typ
                field = typ.model_fields.get(str(part))
                if field is not None:
                    nxt.extend(_unwrap(field.annotation))
                    matched = True
                    break
                # An unknown key under a model is still a key of the user's.
                matched = True
            elif origin is dict:
                nxt.extend(_unwrap(typing.get_args(typ)[1]))
                matched = True
                break
            elif origin is list and isinstance(part, int):
                nxt.extend(_unwrap(typing.get_args(typ)[0]))
                matched = True
                break
        if not matched:
            continue  # a union branch tag, not a key
        keys.append(f"[{part}]" if isinstance(part, int) else str(part))
        current = nxt
    return keys, owner


def _join(keys: list[str]) -> str:
    out = ""
    for k in keys:
        out += k if k.startswith("[") else (f".{k}" if out else k)
    return out


def _lookup(data: Mapping[str, Any], keys: list[str]) -> Any:
    node: Any = data
    for k in keys:
        if k.startswith("[") and isinstance(node, list):
            node = node[int(k[1:-1])]
        elif isinstance(node, Mapping) and k in node:
            node = node[k]
        else:
            return None
    return node


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return str(value)


def _example(owner: type[BaseModel] | None, name: str) -> str | None:
    if owner is None or name not in owner.model_fields:
        return None
    default = owner.model_fields[name].default
    if (
        default is None
        or isinstance(default, (dict, BaseModel))
        or default.__class__.__name__ == "PydanticUndefinedType"
    ):
        return None
    return f"{name} = {_toml_value(default)}"


def _type_names(owner: type[BaseModel] | None, name: str) -> str:
    if owner is None or name not in owner.model_fields:
        return "a different type"
    names = {
        str: "text in quotes",
        int: "a whole number",
        float: "a number",
        bool: "true or false",
        Path: "a path in quotes",
    }
    parts = []
    for t in _unwrap(owner.model_fields[name].annotation):
        if typing.get_origin(t) is Literal:
            parts.append("one of " + ", ".join(repr(a) for a in typing.get_args(t)))
        elif typing.get_origin(t) is list:
            parts.append("a list")
        elif typing.get_origin(t) is dict:
            parts.append("a table")
        else:
            parts.append(names.get(t, getattr(t, "__name__", str(t))))
    return " or ".join(parts)


_TYPE_ERRORS = {
    "int_parsing",
    "int_type",
    "int_from_float",
    "float_parsing",
    "float_type",
    "bool_parsing",
    "bool_type",
    "string_type",
    "list_type",
    "literal_error",
    "path_type",
}


def explain(exc: ValidationError, data: Mapping[str, Any], base_dir: Path | None) -> list[ConfigProblem]:
    """One problem per offending key, with what is wrong and how to fix it."""
    grouped: dict[str, list[tuple[Any, list[str], type[BaseModel] | None]]] = {}
    for err in exc.errors(include_url=False):
        keys, owner = _walk(err["loc"])
        grouped.setdefault(_join(keys), []).append((err, keys, owner))

    problems: list[ConfigProblem] = []
    for key, errs in grouped.items():
        err, keys, owner = errs[0]
        name = keys[-1] if keys else ""
        etype = err["type"]
        got = _lookup(data, keys)
        if etype == "with_fix":
            problems.append(ConfigProblem(key=key, message=err["msg"], fix=str(err.get("ctx", {}).get("fix", ""))))
        elif etype in ("model_type", "model_attributes_type", "dict_type"):
            problems.append(
                ConfigProblem(
                    key=key,
                    message=f"must be a table, not {got!r}",
                    fix=f"write a [{key}] header followed by its keys, one per line",
                )
            )
        elif etype == "extra_forbidden":
            valid = sorted(owner.model_fields) if owner else []
            close = difflib.get_close_matches(name, valid, n=1, cutoff=0.6)
            hint = f"did you mean '{close[0]}'? " if close else ""
            where = _join(keys[:-1]) or "the top level"
            problems.append(
                ConfigProblem(
                    key=key,
                    message=f"unknown key '{name}' in {where}",
                    fix=f"{hint}valid keys here: {', '.join(valid)}",
                )
            )
        elif len(errs) > 1 or etype in _TYPE_ERRORS:
            expected = _type_names(owner, name)
            example = _example(owner, name)
            problems.append(
                ConfigProblem(
                    key=key,
                    message=f"wrong type or value {got!r}: expected {expected}",
                    fix=f"write it as e.g. `{example}`" if example else f"use {expected}",
                )
            )
        elif etype == "missing":
            problems.append(
                ConfigProblem(
                    key=key, message="required key is missing", fix=f"add `{name} = ...` under [{_join(keys[:-1])}]"
                )
            )
        elif etype in ("file_missing", "dir_missing"):
            kind = "file" if etype == "file_missing" else "directory"
            rel = f" (relative paths are relative to {base_dir})" if base_dir else ""
            problems.append(
                ConfigProblem(
                    key=key,
                    message=err["msg"],
                    fix=f"point it at an existing {kind}{rel}, or remove the key",
                )
            )
        elif etype in (
            "greater_than",
            "greater_than_equal",
            "less_than",
            "less_than_equal",
            "string_too_short",
            "too_short",
        ):
            example = _example(owner, name)
            problems.append(
                ConfigProblem(
                    key=key,
                    message=f"value {got!r} is out of range: {err['msg'].lower()}",
                    fix=f"choose a value in range{f', e.g. the default `{example}`' if example else ''}",
                )
            )
        else:
            problems.append(
                ConfigProblem(key=key, message=err["msg"], fix="see the configuration reference in the README")
            )
    return problems
