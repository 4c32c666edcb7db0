from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from typer.testing import CliRunner

from assistant.cli import app
from assistant.config import AssistantConfig, ConfigError, deep_merge, load_config
from assistant.config.loader import default_toml_text
from assistant.config.reference import README_BEGIN, README_END, render_default_toml, render_reference_markdown

from .conftest import FIXTURES, ROOT

BROKEN = sorted((FIXTURES / "config" / "broken").glob("*.toml"))
VALID = sorted((FIXTURES / "config" / "valid").glob("*.toml"))
runner = CliRunner()


def _expectations(path: Path) -> list[tuple[str, str]]:
    """`# expect: KEY | TEXT` lines: one per problem the file must produce."""
    out = []
    for line in path.read_text().splitlines():
        m = re.match(r"#\s*expect:\s*(\S+)\s*\|\s*(.+)$", line)
        if m:
            out.append((m.group(1), m.group(2).strip()))
    return out


def test_embedded_default_is_complete_and_matches_the_models() -> None:
    cfg = load_config()
    assert cfg == AssistantConfig()
    # The shipped file is generated from the models; a stale copy would mislead integrators.
    assert default_toml_text() == render_default_toml()
    assert set(tomllib.loads(default_toml_text())) == {
        "profile",
        "adapters",
        "home",
        "audio",
        "vad",
        "wake_word",
        "asr",
        "tts",
        "engine",
        "skills",
        "latency",
        "wyoming",
        "models",
        "logging",
    }


def test_user_file_overrides_only_what_it_names(tmp_path: Path) -> None:
    f = tmp_path / "a.toml"
    f.write_text("[engine.threads]\ndraft = 2\n[audio]\nsample_rate = 22050\n")
    cfg = load_config(f)
    assert cfg.engine.threads.draft == 2
    assert cfg.engine.threads.target == AssistantConfig().engine.threads.target  # sibling kept
    assert cfg.audio.sample_rate == 22050
    assert cfg.audio.block_ms == AssistantConfig().audio.block_ms
    assert cfg.vad == AssistantConfig().vad


def test_merge_replaces_lists_and_merges_tables() -> None:
    merged = deep_merge({"a": {"x": 1, "y": [1, 2]}, "b": 1}, {"a": {"y": [3]}, "c": 2})
    assert merged == {"a": {"x": 1, "y": [3]}, "b": 1, "c": 2}


def test_relative_paths_are_relative_to_the_config_file(tmp_path: Path) -> None:
    (tmp_path / "ad").mkdir()
    (tmp_path / "ad" / "home.gguf").write_bytes(b"GGUF")
    f = tmp_path / "conf.toml"
    f.write_text('[adapters.home]\npath = "ad/home.gguf"\nscale = 0.5\n')
    cfg = load_config(f)
    assert cfg.adapters["home"].path == tmp_path / "ad" / "home.gguf"
    assert cfg.adapters["home"].scale == 0.5


def test_profiles_choose_the_base_its_draft_and_the_adapters_shipped_for_that_base(tmp_path: Path) -> None:
    standard = load_config()
    assert (standard.profile, standard.engine.base_model) == ("standard", "qwen2.5-coder-1.5b-instruct-q4_k_m")
    assert standard.engine.draft_model == "qwen2.5-coder-0.5b-instruct-q4_k_m" and standard.engine.speculative.enabled
    f = tmp_path / "small.toml"
    f.write_text('profile = "small"\n[adapters.chat]\nscale = 0.8\n[adapters.home]\nenabled = false\n')
    small = load_config(f)
    assert small.engine.base_model == "smollm2-135m-instruct-q4_1" and small.engine.draft_model is None
    # Shipped adapters are on by default; a table tunes one, `enabled = false` turns one off.
    assert sorted(small.adapters) == ["chat", "router"]
    assert small.adapters["router"].path == ROOT / "adapters" / "router" / "router.gguf"
    assert (
        small.adapters["chat"].path == ROOT / "adapters" / "chat" / "chat.gguf" and small.adapters["chat"].scale == 0.8
    )
    # A base of one's own keeps its own choices: no profile draft, no adapters made for another base.
    f.write_text('profile = "small"\n[engine]\nbase_model = "qwen2.5-coder-0.5b-instruct-q4_k_m"\n')
    own = load_config(f)
    assert own.engine.draft_model is None and own.adapters == {}
    f.write_text('[engine]\nbase_model = "qwen2.5-coder-0.5b-instruct-q4_k_m"\n[adapters.router]\n')
    with pytest.raises(ConfigError, match="no adapter of that name is shipped for base model qwen2.5-coder-0.5b"):
        load_config(f)
    # an unknown name without a path: tests/fixtures/config/broken/unknown_shipped_adapter.toml


def test_env_var_names_the_config(tmp_path: Path) -> None:
    f = tmp_path / "env.toml"
    f.write_text("[engine]\nmax_tokens = 7\n")
    assert load_config(env={"ASSISTANT_CONFIG": str(f)}).engine.max_tokens == 7


def test_missing_config_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as exc:
        load_config(tmp_path / "nope.toml")
    assert "does not exist" in str(exc.value)


def test_every_problem_is_reported_not_just_the_first() -> None:
    with pytest.raises(ConfigError) as exc:
        load_config(FIXTURES / "config" / "broken" / "several_problems.toml")
    assert len(exc.value.problems) == 4
    assert all(p.fix for p in exc.value.problems)


@pytest.mark.parametrize("path", BROKEN, ids=[p.stem for p in BROKEN])
@pytest.mark.usefixtures("standard_model_path")  # `config check` reports a default model that is not ready
def test_config_check_explains_each_broken_file(path: Path) -> None:
    expected = _expectations(path)
    assert expected, f"{path} has no '# expect:' line"
    result = runner.invoke(app, ["config", "check", str(path)])
    assert result.exit_code == 2, result.output
    text = result.output
    problem_lines = [
        ln for ln in text.splitlines() if not ln.startswith(" ") and ": " in ln and not ln.startswith(str(path))
    ]
    assert len(problem_lines) == len(expected), text
    for key, fragment in expected:
        line = next((ln for ln in problem_lines if ln.startswith(f"{key}: ")), None)
        assert line is not None, f"no problem reported for {key}:\n{text}"
        block = text[text.index(line) :]
        block = block[: block.find("\n", block.find("fix:")) if "fix:" in block else None]
        assert fragment.lower() in block.lower(), f"{key}: expected '{fragment}' in\n{block}"
        assert "fix:" in block


@pytest.mark.parametrize("path", VALID, ids=[p.stem for p in VALID])
@pytest.mark.usefixtures("standard_model_path")
def test_config_check_accepts_valid_files(path: Path) -> None:
    result = runner.invoke(app, ["config", "check", str(path)])
    assert result.exit_code == 0, result.output
    assert f"{path}: ok" in result.output


@pytest.mark.usefixtures("standard_model_path")
def test_config_check_reports_each_file_and_fails_if_any_is_bad() -> None:
    result = runner.invoke(app, ["config", "check", str(VALID[0]), str(BROKEN[0])])
    assert result.exit_code == 2
    assert f"{VALID[0]}: ok" in result.output


def test_config_show_prints_the_effective_config_as_loadable_toml(tmp_path: Path) -> None:
    f = tmp_path / "c.toml"
    f.write_text("[engine]\ncontext_size = 512\n")
    result = runner.invoke(app, ["config", "show", str(f)])
    assert result.exit_code == 0, result.output
    shown = tomllib.loads(result.output)
    assert shown["engine"]["context_size"] == 512
    assert shown["engine"]["threads"]["target"] == AssistantConfig().engine.threads.target
    # What `show` prints is itself a valid config that means the same thing.
    again = tmp_path / "again.toml"
    again.write_text(result.output)
    assert load_config(again) == load_config(f)


def test_readme_reference_is_generated_from_the_models() -> None:
    readme = (ROOT / "README.md").read_text()
    block = readme[readme.index(README_BEGIN) + len(README_BEGIN) : readme.index(README_END)]
    assert block.strip() == render_reference_markdown().strip(), "run `assistant config reference --write`"


def test_reference_write_refuses_outside_a_source_checkout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from assistant.cli import config as cli_config

    assert cli_config.source_checkout() == ROOT
    installed = tmp_path / "site-packages" / "assistant"  # as in a wheel: no pyproject.toml beside the package
    (installed / "config").mkdir(parents=True)
    monkeypatch.setattr(cli_config, "PACKAGE", installed)
    result = runner.invoke(app, ["config", "reference", "--write"])
    assert result.exit_code == 2
    assert "no pyproject.toml beside it" in result.output and "run it from a source checkout" in result.output
    assert str(installed) in result.output
    assert not (installed / "config" / "default.toml").exists()


@pytest.mark.usefixtures("standard_model_path")
def test_thread_oversubscription_is_a_warning_not_an_error(tmp_path: Path) -> None:
    from assistant.config.checks import check_references

    f = tmp_path / "t.toml"
    f.write_text("[engine.threads]\ntarget = 8\n")
    problems = check_references(load_config(f), cpu_count=2)
    assert [p.key for p in problems] == ["engine.threads"]
    assert problems[0].severity == "warning"
