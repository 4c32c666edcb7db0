"""`assistant config`: check, show and document the integrator configuration."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from assistant.cli.common import err, fail, load, out
from assistant.config import ConfigError, load_config

config_app = typer.Typer(help="Check and show the integrator configuration.", no_args_is_help=True)

PACKAGE = Path(__file__).resolve().parent.parent  # the `assistant` package directory


def source_checkout() -> Path | None:
    """The repository root when this package is a source checkout (pyproject.toml beside it); None when installed."""
    root = PACKAGE.parent
    return root if (root / "pyproject.toml").is_file() else None


@config_app.command("check")
def config_check(files: Annotated[list[Path], typer.Argument(help="TOML files to check.")]) -> None:
    """Validate files; print every problem with its key, cause and fix. Exit 2 if any file is invalid."""
    from assistant.config.checks import check_references

    bad = 0
    for file in files:
        try:
            cfg = load_config(file)
        except ConfigError as exc:
            bad += 1
            err.print(str(exc), markup=False)
            continue
        from assistant.engine.load import adapter_problems, context_problems
        from assistant.skillhost.runtime import settings_problems

        problems = check_references(cfg) + adapter_problems(cfg) + context_problems(cfg)
        errors = [p for p in problems if p.severity == "error"]
        invalid_skills = 0
        for skill_problem in settings_problems(cfg):
            # A skill whose settings do not validate would not load: that is the integrator's error.
            invalid = "skills.settings" in skill_problem.message
            invalid_skills += invalid
            err.print(f"{file}: {'error' if invalid else 'warning'}: {skill_problem}", markup=False)
        if errors:
            bad += 1
            err.print(str(ConfigError(str(file), problems)), markup=False)
        elif invalid_skills:
            bad += 1
        else:
            for p in problems:
                err.print(f"{file}: {p.render()}", markup=False)
            out.print(f"{file}: ok")
    if bad:
        raise typer.Exit(2)


@config_app.command("show")
def config_show(
    file: Annotated[Path | None, typer.Argument(help="TOML file; default: the embedded default.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON instead of TOML.")] = False,
) -> None:
    """Print the effective configuration (embedded default overlaid with FILE)."""
    import tomli_w

    cfg = load(file)
    data = cfg.model_dump(mode="json", exclude_none=True)
    if as_json:
        out.print_json(json.dumps(data))
    else:
        sys.stdout.write(tomli_w.dumps(data))


@config_app.command("reference")
def config_reference(
    write: Annotated[
        bool, typer.Option("--write", help="Update the README section and the embedded default.toml.")
    ] = False,
) -> None:
    """Print the configuration reference generated from the pydantic models."""
    from assistant.config.reference import render_default_toml, render_reference_markdown, splice_readme

    reference = render_reference_markdown()
    if not write:
        sys.stdout.write(reference)
        return
    root = source_checkout()
    if root is None:
        raise fail(
            f"--write regenerates the source files assistant/config/default.toml and the README section, but the "
            f"package at {PACKAGE} is installed (no pyproject.toml beside it), so it would overwrite the installed "
            "copy: run it from a source checkout (git clone, then pip install -e .)",
            2,
        )
    default = root / "assistant" / "config" / "default.toml"
    default.write_text(render_default_toml())
    readme = root / "README.md"
    readme.write_text(splice_readme(readme.read_text(), reference))
    out.print(f"wrote {default} and {readme}")
