"""Skill runtime: isolation, permissions, follow-ups, timers, home control, third-party plugins."""

from __future__ import annotations

import ast
import asyncio
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from assistant.config import AssistantConfig, load_config
from assistant.engine import ChatMessage
from assistant.pipeline import Assistant, Session
from assistant.router.evaluate import evaluate, load_phrases
from assistant.skillhost.llm import SkillLLM
from assistant.skills import Context, HomeCommand, Number, Reply, Skill

DATA = Path(__file__).resolve().parent / "data"
ROOT = Path(__file__).resolve().parent.parent


def _assistant(*skills: Skill, timeout_s: float = 5.0) -> Assistant:
    cfg = AssistantConfig.model_validate({"skills": {"timeout_s": timeout_s}})
    return Assistant(cfg, None, list(skills))


def _one(name: str, handler: object, template: str = "do it", permissions: list[str] | None = None) -> Skill:
    s = Skill(name, permissions=permissions or [])
    s.intent("go", templates=[template])(handler)  # type: ignore[arg-type]
    return s


def _ok(ctx: Context) -> str:
    return "fine"


def test_a_crashing_handler_apologizes_and_the_assistant_keeps_serving(caplog: pytest.LogCaptureFixture) -> None:
    def crash(ctx: Context) -> str:
        raise RuntimeError("boom")

    a = _assistant(_one("crashy", crash), _one("healthy", _ok, "are you ok"))
    result = a.ask("do it")
    assert result.error == "error" and result.text == "Sorry, the crashy skill ran into a problem."
    assert any("crashy.go raised RuntimeError: boom" in r.getMessage() for r in caplog.records)
    assert a.ask("are you ok").text == "fine"


def test_a_hanging_handler_is_abandoned_in_its_budget_and_then_suspended() -> None:
    release = threading.Event()

    def hang(ctx: Context) -> str:
        release.wait(30)
        return "too late"

    a = _assistant(_one("sleepy", hang), _one("healthy", _ok, "are you ok"), timeout_s=0.3)
    try:
        t0 = time.perf_counter()
        first = a.ask("do it")
        assert time.perf_counter() - t0 < 2.0
        assert first.error == "timeout" and "took too long" in first.text
        assert a.ask("are you ok").text == "fine"  # the assistant keeps serving meanwhile
        a.ask("do it")
        suspended = a.ask("do it")  # two abandoned threads: no third one is started
        assert suspended.error == "suspended" and "not responding" in suspended.text
    finally:
        release.set()


def test_async_handlers_run_and_are_cancelled_at_their_budget() -> None:
    async def quick(ctx: Context) -> str:
        await asyncio.sleep(0.01)
        return "async fine"

    async def slow(ctx: Context) -> str:
        await asyncio.sleep(30)
        return "never"

    a = _assistant(_one("quick", quick, "quick one"), _one("slow", slow, "slow one"), timeout_s=0.3)
    assert a.ask("quick one").text == "async fine"
    assert a.ask("slow one").error == "timeout"
    assert not a.runtime.skills["slow"].hung  # a coroutine is really cancelled, no thread left behind


def _connect(ctx: Context) -> str:
    try:
        socket.create_connection(("127.0.0.1", 9), timeout=0.5).close()
    except ConnectionError:
        return "connection attempted"
    return "connected"


def test_network_needs_the_network_permission() -> None:
    a = _assistant(_one("sneaky", _connect, "phone home"), _one("weather", _connect, "get weather", ["network"]))
    denied = a.ask("phone home")
    assert denied.error == "permission" and "not allowed" in denied.text
    assert a.ask("get weather").text in ("connection attempted", "connected")


def test_subprocess_and_undeclared_capabilities_are_refused() -> None:
    def spawn(ctx: Context) -> str:
        subprocess.run(["true"], check=True)
        return "spawned"

    def use_timer(ctx: Context) -> str:
        ctx.schedule(1, "hi")
        return "scheduled"

    def use_home(ctx: Context) -> str:
        ctx.home.execute(HomeCommand(device="lamp", action="turn_on"))
        return "switched"

    a = _assistant(_one("s1", spawn, "run it"), _one("s2", use_timer, "time it"), _one("s3", use_home, "light it"))
    for text in ("run it", "time it", "light it"):
        assert a.ask(text).error == "permission", text
    subprocess.run(["true"], check=True)  # framework code outside handlers is not restricted


def test_follow_up_fills_a_missing_slot_without_repeating_the_command() -> None:
    a = Assistant(load_config(DATA / "routing-config.toml"), None)
    heard: list[str] = []
    a.on_announcement(lambda skill, text: heard.append(text))
    session = Session()
    asked = a.ask("set a timer", session)
    assert asked.text == "For how long?" and asked.follow_up and session.expecting_answer
    done = a.ask("for one second", session)
    assert done.route.stage == "follow_up" and done.route.slots == {"duration": 1}
    assert "1 second" in done.text and not done.follow_up
    deadline = time.monotonic() + 5
    while not heard and time.monotonic() < deadline:
        time.sleep(0.05)
    assert heard == ["Your 1 second timer is done."]  # the timer really fired


def test_timers_list_and_cancel() -> None:
    a = Assistant(load_config(DATA / "routing-config.toml"), None)
    a.ask("set a pasta timer for 10 minutes")
    a.ask("set a timer for 5 minutes")
    listed = a.ask("list my timers")
    assert [t["name"] for t in listed.data["timers"]] == ["5 minutes timer #1", "pasta"]  # numbered per length
    assert "pasta" in a.ask("cancel the pasta timer").text
    assert a.ask("cancel all timers").text == "Cancelled the timer."
    assert a.ask("how much time is left").text == "There are no timers running."


def test_a_changed_subject_or_cancel_word_closes_the_question() -> None:
    a = Assistant(load_config(DATA / "routing-config.toml"), None)
    session = Session()
    a.ask("set a timer", session)
    other = a.ask("what is five plus three", session)
    assert other.route.intent == "calculator.calculate" and other.text == "That's 8."
    a.ask("set a timer", session)
    assert a.ask("never mind", session).text == "Okay." and not session.expecting_answer


def test_a_skill_can_ask_its_own_question() -> None:
    skill = Skill("paint")

    def chosen(ctx: Context) -> str:
        return f"Painting it {ctx.slots['answer']} percent."

    @skill.intent("start", templates=["paint the wall"])
    def start(ctx: Context) -> Reply:
        return ctx.ask("How much paint, in percent?", then=chosen, parse=Number())

    a = _assistant(skill)
    session = Session()
    assert a.ask("paint the wall", session).follow_up
    assert a.ask("about fifty", session).text == "Painting it 50 percent."


def test_home_commands_go_to_the_jsonl_sink(tmp_path: Path) -> None:
    cfg = load_config(DATA / "routing-config.toml")
    cfg.home.sink_path = tmp_path / "home.jsonl"
    a = Assistant(cfg, None)
    on = a.ask("turn on the kitchen light")
    assert on.text == "Turning on the kitchen light." and on.data["device"] == "kitchen_light"
    a.ask("dim the bedroom light to 30 percent")
    records = [json.loads(line) for line in (tmp_path / "home.jsonl").read_text().splitlines()]
    assert [(r["device"], r["action"], r["value"]) for r in records] == [
        ("kitchen_light", "turn_on", None), ("bedroom_light", "set_level", 30),
    ]  # fmt: skip
    assert a.ask("turn on the light").text == "Which light: the bedroom or the kitchen?"
    assert a.ask("lock the lamp").route.intent == "home.lock"
    assert "can't lock" in a.ask("lock the lamp").text  # checked against the device's kind
    assert len((tmp_path / "home.jsonl").read_text().splitlines()) == 2


def test_a_home_with_no_devices_says_how_to_add_them() -> None:
    """Not the chat fallback's guess: everyday device words reach the home skill, which explains."""
    a = Assistant(AssistantConfig(), None)
    for text in ["turn on the kitchen light", "switch the fan off", "set the thermostat to 20 degrees",
                 "lock the front door", "dim the lights to 30 percent", "open the blinds"]:  # fmt: skip
        reply = a.ask(text)
        assert reply.route is not None and reply.route.skill == "home", text
        assert "no devices" in reply.text and "config file" in reply.text, reply.text
    assert a.ask("turn off the timer").route.intent == "timer.cancel"  # other skills' words are not devices
    assert a.ask("do not turn on the light").route.skill == "chat"  # negations still never act


def test_the_calculator_takes_fractions_and_what_the_classifier_sends_it() -> None:
    a = Assistant(AssistantConfig(), None)
    for text, value in [("what is half of ninety", 45), ("what is one third of ninety nine", 33),
                        ("what is double forty eight", 96), ("what is a quarter of two hundred", 50)]:  # fmt: skip
        assert a.ask(text).text == f"That's {value}.", text

    class Picks:  # the LLM classifier's choice, without a model: what it sent these to (bench.quality)
        def __init__(self, intent: str) -> None:
            self.intent = intent

        def classify(self, text: str, normalized: str) -> tuple[str | None, float, str]:
            return self.intent, 1.0, "stub"

        def warm(self) -> None: ...

    a.router.classifier = Picks("calculator.calculate")
    reply = a.ask("how many bones are in the adult human body")  # crashed: KeyError 'expression'
    # Then it said "I found no numbers"; now the guess is undone and the chat fallback answers.
    assert reply.route.intent == "chat.answer" and reply.route.stage == "fallback"  # (no LLM in this test)
    assert "calculator.calculate found nothing to do" in reply.route.reason and "no numbers" in reply.route.reason
    a.router.classifier = Picks("translate.translate")
    reply = a.ask("who painted the mona lisa")
    assert reply.route.intent == "chat.answer" and "translate.translate found nothing" in reply.route.reason
    # After a template match the skill was asked for: its message says how to ask.
    assert a.ask("convert five miles to miles").text.startswith("Please say the amount")
    assert a.ask("how many grams are in a kilogram").text == "1 kilogram is 1000 grams."  # "a" is one


def test_invalid_skill_settings_name_the_key() -> None:
    cfg = AssistantConfig.model_validate({"skills": {"settings": {"clock": {"timezone": "Mars/Olympus"}}}})
    a = Assistant(cfg, None)
    assert "clock" not in a.runtime.skills
    assert any("skills.settings.clock.timezone" in p and "unknown time zone" in p for p in a.problems)


PUBLIC_API = {"assistant.skills", "assistant.skills.api", "assistant.skills.capabilities", "assistant.skills.slots"}


def test_built_in_skills_import_only_the_public_plugin_api() -> None:
    """The built-in skills register as a third-party skill would, so they use only what one can import."""
    found: dict[str, set[str]] = {}
    for path in sorted((ROOT / "assistant_skills").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules = [node.module]
            else:
                continue
            for module in modules:
                if module.split(".")[0] == "assistant":
                    found.setdefault(path.name, set()).add(module)
    assert {"home.py", "calculator.py", "translate.py"} <= set(found)  # the walk sees the imports
    internal = {name: sorted(m - PUBLIC_API) for name, m in found.items() if m - PUBLIC_API}
    assert not internal, f"built-in skills import assistant internals: {internal}"


@pytest.mark.slow
def test_json_commands_from_the_real_model_follow_the_schema(engine: object) -> None:
    from assistant.engine.llama_cpp import LlamaCppEngine

    assert isinstance(engine, LlamaCppEngine)
    out: list[str] = []
    llm = SkillLLM(
        engine, adapter=None, system_prompt="", sampling=__import__("assistant.engine").engine.Sampling(),
        max_tokens=64, max_sentences=2, history=[], emit=out.append, cancel=threading.Event(),
    )  # fmt: skip
    messages = [
        ChatMessage(role="system", content="Reply with a JSON device command. Devices: light (kitchen), fan."),
        ChatMessage(role="user", content="switch on the kitchen light"),
    ]
    command = llm.json(messages, HomeCommand)
    assert isinstance(command, HomeCommand) and command.device
    assert llm.stats and llm.stats[0].finish_reason == "eos"  # the grammar ended it, not the token cap
    assert out == []  # structured output is not spoken


@pytest.mark.slow
def test_routing_set_with_the_llm_stage_on_the_real_model(engine: object) -> None:
    a = Assistant(load_config(DATA / "routing-config.toml"), engine)  # type: ignore[arg-type]
    report = evaluate(a.router, load_phrases(DATA / "routing.toml"))
    print(report.confusion_table(), f"\naccuracy {report.accuracy:.3f}", report.by_stage())
    assert report.deterministic_precision >= 0.99
    # Measured 0.876 with the 135M base: paraphrases need issue 6's classifier adapter for 0.95.
    assert report.accuracy >= 0.85
    ood = [r for r in report.results if r.case.intent == "chat.answer"]
    assert sum(r.ok for r in ood) / len(ood) >= 0.9  # general questions do not trigger commands


@pytest.mark.slow
def test_held_out_routing_on_the_standard_model(standard_engine: object) -> None:
    """The standard base picks among all intents (few-shot) on phrasings nobody wrote a template for."""
    a = Assistant(load_config(DATA / "routing-config.toml"), standard_engine)  # type: ignore[arg-type]
    assert a.router.classifier is not None and a.router.classifier.llm_decides  # type: ignore[attr-defined]
    a.router.classifier.warm()
    report = evaluate(a.router, load_phrases(DATA / "routing-heldout.toml"))
    print(report.confusion_table(), f"\naccuracy {report.accuracy:.3f}", report.by_stage())
    assert report.deterministic_precision >= 0.99
    assert report.accuracy >= 0.92  # measured 0.962 (bench.router); the 135M base with its adapter: see README
    ood = [r for r in report.results if r.case.intent == "chat.answer"]
    assert sum(r.ok for r in ood) / len(ood) >= 0.9  # general questions and near misses do not become commands


def test_a_third_party_skill_from_skill_new_is_discovered_once_installed(tmp_path: Path) -> None:
    exe = Path(sys.executable).parent / "assistant"
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "site")}
    run = lambda *args: subprocess.run([str(exe), *args], capture_output=True, text=True, env=env, timeout=120)  # noqa: E731
    created = run("skill", "new", "greeter", "--dir", str(tmp_path))
    assert created.returncode == 0, created.stderr
    before = run("route", "say hello to alice", "--no-llm")
    assert "chat.answer" in before.stdout
    pip = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--target"]
    subprocess.run([*pip, str(tmp_path / "site"), str(tmp_path / "greeter")], check=True, timeout=300)
    routed = run("route", "say hello to alice", "--no-llm", "--json")
    assert json.loads(routed.stdout)["intent"] == "greeter.greet", routed.stderr
    tested = run("skill", "test", str(tmp_path / "greeter"))
    assert tested.returncode == 0 and tested.stdout.count("ok") == 2, tested.stdout + tested.stderr
