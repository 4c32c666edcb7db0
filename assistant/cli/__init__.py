"""`assistant` command line: run turns, check configs, manage models.

One module per command group:
- `turns`: the root app and its commands: ask, run, chat, info, route
- `config`: assistant config check / show / reference
- `models`: assistant models list / verify / prepare / compile
- `skill`: assistant skill list / new / test
- `adapters`: assistant adapters train / eval
- `serve`: assistant serve --wyoming
- `common`: the consoles, the --config option, loading and failing, progress bars
"""

from __future__ import annotations

from assistant.cli.adapters import adapters_app
from assistant.cli.config import config_app
from assistant.cli.models import models_app
from assistant.cli.serve import serve
from assistant.cli.skill import skill_app
from assistant.cli.turns import app

app.add_typer(config_app, name="config")
app.add_typer(models_app, name="models")
app.add_typer(skill_app, name="skill")
app.add_typer(adapters_app, name="adapters")
app.command()(serve)


def main() -> None:
    app()


__all__ = ["app", "main"]
