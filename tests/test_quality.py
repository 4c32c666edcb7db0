"""Lint and type checks run with the tests so CI enforces them."""

from __future__ import annotations

import subprocess
import sys

from .conftest import ROOT


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_ruff_lint_and_format() -> None:
    lint = _run("ruff", "check", "assistant", "assistant_skills", "tests", "bench")
    assert lint.returncode == 0, lint.stdout + lint.stderr
    fmt = _run("ruff", "format", "--check", "assistant", "assistant_skills", "tests", "bench")
    assert fmt.returncode == 0, fmt.stdout + fmt.stderr


def test_mypy() -> None:
    result = _run("mypy")
    assert result.returncode == 0, result.stdout + result.stderr


def _import_graph() -> dict[str, set[str]]:
    """Module -> the project modules it imports (lazy imports included), package faces' own re-exports left out."""
    import ast

    files = [*ROOT.glob("assistant/**/*.py"), *ROOT.glob("assistant_skills/*.py")]
    modules = {".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__"): p for p in files}

    def resolve(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        targets = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            targets |= {t for n in names if (t := resolve(n)) and t != module and not t.startswith(module + ".")}
        graph[module] = targets
    return graph


def test_no_import_cycles() -> None:
    graph = _import_graph()

    def reaches(start: str, goal: str) -> bool:
        seen, todo = set(), [start]
        while todo:
            for nxt in graph[todo.pop()] - seen:
                if nxt == goal:
                    return True
                seen.add(nxt)
                todo.append(nxt)
        return False

    cycles = sorted(f"{a} <-> {b}" for a in graph for b in graph[a] if a < b and reaches(b, a))
    assert cycles == []


def test_lower_layers_do_not_import_higher_ones() -> None:
    """config, modelstore, text and audio sit below the engine, the skills and the turn path."""
    higher = ("assistant.engine", "assistant.skills", "assistant.skillhost", "assistant.router", "assistant.pipeline",
              "assistant.voice", "assistant.cli", "assistant.asr", "assistant.tts", "assistant.training")  # fmt: skip
    lower = ("assistant.config", "assistant.modelstore", "assistant.text", "assistant.audio", "assistant.paths")
    bad = {m: sorted(t for t in ts if t.startswith(higher)) for m, ts in _import_graph().items() if m.startswith(lower)}
    assert {m: ts for m, ts in bad.items() if ts} == {}
