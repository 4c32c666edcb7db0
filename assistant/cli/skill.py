"""`assistant skill`: list the installed skills, scaffold a new one, run phrase tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from assistant.cli.common import ConfigOpt, err, fail, load, load_assistant, out

skill_app = typer.Typer(help="Create, list and test skills.", no_args_is_help=True)


@skill_app.command("list")
def skill_list(config: ConfigOpt = None) -> None:
    """Installed skills, their intents and permissions, and any load problems or template conflicts."""
    from assistant.pipeline import Assistant

    assistant = Assistant(load(config), None)
    table = Table()
    for column in ("skill", "intents", "permissions", "adapter"):
        table.add_column(column, overflow="fold")
    for name, loaded in assistant.runtime.skills.items():
        intents = ", ".join(it.name + (" (fallback)" if it.fallback else "") for it in loaded.intents.values())
        table.add_row(name, intents, ", ".join(loaded.skill.permissions) or "-", loaded.adapter or "-")
    out.print(table)
    for problem in assistant.problems:
        err.print(Text.assemble(("warning:", "yellow"), f" {problem}"))
    assistant.close()


@skill_app.command("new")
def skill_new(
    name: Annotated[str, typer.Argument(help="Skill name (a Python identifier).")],
    directory: Annotated[Path, typer.Option("--dir", help="Where to create the package.")] = Path("."),
) -> None:
    """Scaffold an installable skill package: entry point, an example intent, phrase tests."""
    from assistant.skills.scaffold import new_skill

    try:
        root = new_skill(name, directory)
    except ValueError as exc:
        raise fail(str(exc), 2) from None
    out.print(f"created {root}; next: pip install -e {root} && assistant skill test {root}")


@skill_app.command("test")
def skill_test(
    path: Annotated[Path, typer.Argument(help="A skill directory or a phrases TOML file.")] = Path("."),
    config: ConfigOpt = None,
    llm: Annotated[bool, typer.Option(help="Also use the LLM classifier stage (loads the model).")] = False,
) -> None:
    """Route every phrase test (utterance -> intent and slots) through the installed skills; exit 1 on a failure."""
    from assistant.pipeline import Assistant
    from assistant.router.evaluate import evaluate, load_phrases
    from assistant.skills.scaffold import phrase_files

    files = phrase_files(path)
    if not files:
        raise fail(f"no phrases.toml or *.phrases.toml in {path}", 2)
    cfg = load(config)
    assistant = load_assistant(cfg) if llm else Assistant(cfg, None)
    failed = 0
    try:
        for file in files:
            try:
                report = evaluate(assistant.router, load_phrases(file), classify=llm)
            except ValueError as exc:
                raise fail(str(exc), 2) from None
            for r in report.results:
                if r.ok:
                    out.print(
                        Text.assemble(("ok", "green"), f"   {r.case.text!r} -> {r.got} {json.dumps(r.route.slots)}")
                    )
                else:
                    failed += 1
                    out.print(
                        Text.assemble(
                            ("FAIL", "red"),
                            f" {r.case.text!r}: expected {r.case.intent} {json.dumps(r.case.slots)}, "
                            f"got {r.got} {json.dumps(r.route.slots)} ({r.route.reason})",
                        ),
                    )
    finally:
        assistant.close()
    if failed:
        raise typer.Exit(1)
