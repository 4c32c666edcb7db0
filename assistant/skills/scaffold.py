"""`assistant skill new NAME`: an installable skill package with its entry point and phrase tests."""

from __future__ import annotations

import re
from pathlib import Path

_PYPROJECT = """\
[build-system]
requires = ["hatchling>=1.24"]
build-backend = "hatchling.build"

[project]
name = "assistant-skill-{dash}"
version = "0.1.0"
description = "{title} skill for the assistant"
requires-python = ">=3.11"
dependencies = ["assistant"]

[project.entry-points."assistant.skills"]
{name} = "{package}:skill"

[tool.hatch.build.targets.wheel]
packages = ["{package}"]
"""

_MODULE = '''\
"""{title}: a skill for the assistant."""

from __future__ import annotations

from assistant.skills import Context, Enum, Skill

skill = Skill(
    "{name}",
    description="Greets people by name.",
    permissions=[],  # e.g. ["llm"], ["home.control"], ["network"]: anything else is refused
)


@skill.intent(
    "greet",
    templates=["(say hello|say hi) to {{person}}", "greet {{person}}"],
    slots={{"person": Enum(["alice", "bob"], required=True, prompt="Whom should I greet?")}},
    examples=["please welcome alice"],
)
def greet(ctx: Context) -> str:
    """Greet someone."""
    return f"Hello, {{ctx.slots['person'].title()}}!"
'''

_PHRASES = """\
# Phrase tests: `assistant skill test .` routes each text and checks intent and slots.
case = [
  {{ text = "say hello to alice", intent = "{name}.greet", slots = {{ person = "alice" }} }},
  {{ text = "greet bob", intent = "{name}.greet", slots = {{ person = "bob" }} }},
]
"""

_README = """\
# {title} skill

Install into the assistant's environment and it is discovered through the `assistant.skills`
entry point; no change to the assistant is needed:

    pip install -e .
    assistant skill test .
    assistant route "say hello to alice"
"""


def new_skill(name: str, parent: Path) -> Path:
    """Create `parent/NAME/` and return it. NAME must be a Python identifier."""
    if not re.fullmatch(r"[a-z][a-z0-9_]*", name):
        raise ValueError(f"skill name {name!r}: use lowercase letters, digits and _ (a Python identifier)")
    root = parent / name
    if root.exists():
        raise ValueError(f"{root} already exists; choose another name or directory")
    package = f"assistant_skill_{name}"
    fields = {"name": name, "dash": name.replace("_", "-"), "package": package, "title": name.replace("_", " ").title()}
    (root / package).mkdir(parents=True)
    (root / "pyproject.toml").write_text(_PYPROJECT.format(**fields))
    (root / package / "__init__.py").write_text(_MODULE.format(**fields))
    (root / "phrases.toml").write_text(_PHRASES.format(**fields))
    (root / "README.md").write_text(_README.format(**fields))
    return root


def phrase_files(path: Path) -> list[Path]:
    """The phrase-test files of a skill directory (phrases.toml, tests/*.phrases.toml) or the file itself."""
    if path.is_file():
        return [path]
    found = sorted({*path.glob("phrases.toml"), *path.glob("*.phrases.toml"), *path.glob("tests/*.phrases.toml")})
    return found
