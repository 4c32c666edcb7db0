"""Path types of the config (relative to the file that names them; checked to exist) and the
XDG folders the assistant keeps its state and caches in."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, ValidationInfo
from pydantic_core import PydanticCustomError

__all__ = ["AnyPath", "ExistingDir", "ExistingFile", "state_dir"]


def _resolve_path(value: Path, info: ValidationInfo) -> Path:
    """Relative paths are relative to the config file that named them, not the cwd."""
    value = value.expanduser()
    base = (info.context or {}).get("base_dir")
    if not value.is_absolute() and base is not None:
        value = Path(base) / value
    return value


def _must_exist(kind: str) -> Callable[[Path, ValidationInfo], Path]:
    def check(value: Path, info: ValidationInfo) -> Path:
        value = _resolve_path(value, info)
        ok = value.is_file() if kind == "file" else value.is_dir()
        if not ok:
            other = "a directory, not a file" if kind == "file" else "a file, not a directory"
            what = other if value.exists() else "missing"
            raise PydanticCustomError(
                f"{kind}_missing", "{kind} {path} is {what}", {"kind": kind, "path": str(value), "what": what}
            )
        return value

    return check


ExistingFile = Annotated[Path, AfterValidator(_must_exist("file"))]
ExistingDir = Annotated[Path, AfterValidator(_must_exist("dir"))]
AnyPath = Annotated[Path, AfterValidator(_resolve_path)]


def state_dir() -> Path:
    """What the assistant learns at run time and keeps between runs (XDG state, not cache)."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "assistant"


def _default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "assistant" / "models"
