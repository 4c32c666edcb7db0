"""What every command group shares: the consoles, the --config option, loading, failing, progress bars."""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.text import Text

from assistant.config import AssistantConfig, ConfigError, load_config
from assistant.engine import EngineError
from assistant.modelstore import ModelError

# Piped output is read by scripts: never truncate it to a guessed 80 columns.
# markup=False: replies, utterances and config values are printed as they are ("[audio]" stays).
out = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 200, markup=False)
err = Console(stderr=True, highlight=False, soft_wrap=True, markup=False)

ConfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--config", "-c", help="Integrator TOML file (default: $ASSISTANT_CONFIG, else the embedded default)."
    ),
]


class RichReporter:
    """Progress bars on stderr for hashing and assembling large files."""

    def __init__(self, console: Console = err):
        self.console = console

    @contextlib.contextmanager
    def task(self, description: str, total: int) -> Iterator[Callable[[int], None]]:
        columns = (
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
        )
        with Progress(*columns, console=self.console, transient=True, disable=not self.console.is_terminal) as bar:
            task = bar.add_task(description, total=total)
            yield lambda n: bar.advance(task, n)


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print `error: message` on stderr; the caller raises the returned Exit (`raise fail(...)`)."""
    err.print(Text.assemble(("error:", "red"), f" {message}"), highlight=False)
    return typer.Exit(code)


def load(config: Path | None) -> AssistantConfig:
    """The configuration (exit 2 with its problems if invalid), and logging set up from it."""
    try:
        cfg = load_config(config)
    except ConfigError as exc:
        raise fail(str(exc), 2) from None
    logging.basicConfig(level=cfg.logging.level.upper(), format="%(levelname)s %(name)s: %(message)s")
    return cfg


def load_assistant(cfg: AssistantConfig):  # type: ignore[no-untyped-def]
    from assistant.pipeline import Assistant

    try:
        return Assistant.load(cfg, reporter=RichReporter())
    except (ModelError, EngineError) as exc:
        raise fail(str(exc)) from None
