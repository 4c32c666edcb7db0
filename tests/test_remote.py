"""The remote engine (`engine.backend = "openai"`) against a real home server: llama.cpp's OpenAI-compatible
server (llama-cpp-python's), started here on loopback with the small model and its home adapter."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from assistant.config import AssistantConfig
from assistant.engine import ChatMessage, EngineError, load_engine
from assistant.engine.remote import RemoteEngine
from assistant.engine.types import Engine
from assistant.pipeline import Assistant, Session
from tests.conftest import ROOT, free_port

KEY = "test-token-1234"
SYSTEM = ChatMessage(role="system", content="You are a helpful assistant.")
STORY = [SYSTEM, ChatMessage(role="user", content="Tell me a long story about a dragon and a knight.")]
FRANCE = [SYSTEM, ChatMessage(role="user", content="What is the capital of France?")]


class HomeServer:
    """`python -m llama_cpp.server` on a loopback port: the base model, and the same model with a LoRA."""

    def __init__(self, folder: Path, model: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        common = {"model": str(model), "n_ctx": 1024, "n_threads": 1, "n_threads_batch": 1, "verbose": False}
        config = {
            "host": "127.0.0.1",
            "port": self.port,
            "api_key": KEY,
            "models": [
                {**common, "model_alias": "smollm2"},
                {**common, "model_alias": "home", "lora_path": str(ROOT / "adapters/home/home.gguf")},
            ],
        }
        self.config = folder / f"server-{self.port}.json"
        self.config.write_text(json.dumps(config))
        self.log = folder / f"server-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "llama_cpp.server", "--config_file", str(self.config)], stdout=log, stderr=log
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"the server exited: {self.log.read_text()[-2000:]}"
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"the server did not start: {self.log.read_text()[-2000:]}")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)


def _config(url: str, **remote: object) -> AssistantConfig:
    return AssistantConfig.model_validate(
        {"profile": "small", "engine": {"backend": "openai", "remote": {"url": url, "api_key": KEY, **remote}}}
    )


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, default_model_path: Path) -> Iterator[HomeServer]:
    srv = HomeServer(tmp_path_factory.mktemp("home-server"), default_model_path)
    srv.start()
    yield srv
    srv.kill()


@pytest.fixture(scope="module")
def remote(server: HomeServer) -> Iterator[RemoteEngine]:
    """The engine `load_engine` builds for the config: the server, with the small profile's local engine."""
    engine = load_engine(_config(server.url))
    assert isinstance(engine, RemoteEngine)
    yield engine
    engine.close()


def _other(remote: RemoteEngine, url: str, **cfg: object) -> RemoteEngine:
    """Another view of the same local engine, on another server (not closed: the local engine is shared)."""
    return RemoteEngine(_config(url, **cfg).engine.remote, remote.local)


def _unused_url() -> str:
    return f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there


def test_the_server_answers_as_the_local_engine_would_and_adapters_become_models(remote: RemoteEngine) -> None:
    cases = [(FRANCE, None), (FRANCE, "home")]
    for messages, adapter in cases:
        gen = remote.generate(messages, max_tokens=40, adapter=adapter)
        pieces = list(gen)
        assert gen.stats.fallback is None, gen.stats.fallback
        assert gen.stats.finish_reason == "eos" and len(pieces) > 1  # streamed, piece by piece
        local = remote.local.generate(messages, max_tokens=40, adapter=adapter).result()
        assert gen.text == local, (adapter, gen.text, local)  # same model, same adapter, greedy
    assert "Paris" in remote.generate(FRANCE, max_tokens=40).result()
    # The adapter really changes the answer: the server applied it, not just the base under its name.
    assert (
        remote.generate(FRANCE, max_tokens=40, adapter="home").result()
        != remote.generate(FRANCE, max_tokens=40).result()
    )


def test_grammar_requests_are_constrained_by_the_server(remote: RemoteEngine) -> None:
    gen = remote.generate(FRANCE, max_tokens=8, grammar='root ::= "yes" | "no"')
    assert gen.result() in ("yes", "no") and gen.stats.fallback is None


def test_an_adapter_the_server_does_not_serve_runs_locally_and_says_so(remote: RemoteEngine) -> None:
    gen = remote.generate(FRANCE, max_tokens=24, adapter="chat")
    text = gen.result()
    assert gen.stats.fallback is not None and "does not serve 'chat'" in gen.stats.fallback
    assert text == remote.local.generate(FRANCE, max_tokens=24, adapter="chat").result()
    with pytest.raises(EngineError, match="unknown adapter"):
        remote.generate(FRANCE, adapter="nonexistent")


def test_a_wrong_api_key_falls_back_and_says_how_to_fix_it(remote: RemoteEngine, server: HomeServer) -> None:
    other = _other(remote, server.url, api_key="wrong-key")
    gen = other.generate(FRANCE, max_tokens=24)
    assert gen.result() == remote.local.generate(FRANCE, max_tokens=24).result()
    assert (
        gen.stats.fallback is not None
        and "API key" in gen.stats.fallback
        and "engine.remote.api_key" in gen.stats.fallback
    )


def test_an_unreachable_server_falls_back_at_once_and_rests(remote: RemoteEngine) -> None:
    other = _other(remote, _unused_url(), retry_after_s=60)
    t0 = time.perf_counter()
    gen = other.generate(FRANCE, max_tokens=24)
    assert gen.result() and gen.stats.finish_reason == "eos"
    assert gen.stats.fallback is not None and "unreachable" in gen.stats.fallback, gen.stats.fallback
    assert time.perf_counter() - t0 < 10
    again = other.generate(FRANCE, max_tokens=4)
    again.result()
    assert again.stats.fallback is not None and "retried in" in again.stats.fallback  # no second wait


def test_barge_in_closes_the_stream(remote: RemoteEngine) -> None:
    cancel = threading.Event()
    gen = remote.generate(STORY, max_tokens=200, cancel=cancel)
    pieces = []
    for piece in gen:
        pieces.append(piece)
        if len(pieces) == 3:
            cancel.set()
            t_cancel = time.perf_counter()
    assert gen.stats.finish_reason == "cancelled" and len(pieces) == 3
    assert time.perf_counter() - t_cancel < 0.5
    after = remote.generate(FRANCE, max_tokens=40)
    assert "Paris" in after.result() and after.stats.fallback is None  # the server answers the next request


def test_a_server_killed_mid_answer_loses_nothing_the_local_engine_finishes(
    tmp_path: Path, default_model_path: Path, remote: RemoteEngine
) -> None:
    srv = HomeServer(tmp_path, default_model_path)
    srv.start()
    try:
        other = _other(remote, srv.url, retry_after_s=60)
        gen = other.generate(STORY, max_tokens=160)
        said = []
        t0 = time.perf_counter()
        for piece in gen:
            said.append(piece)
            if len(said) == 4:
                srv.kill()
                server_part = "".join(said)
        assert time.perf_counter() - t0 < 60  # nothing hangs
        text = gen.text
        assert text.startswith(server_part) and len(text) > len(server_part) + 20, (server_part, text)
        assert gen.stats.finish_reason in ("eos", "length")
        assert gen.stats.fallback is not None and "failed mid-answer" in gen.stats.fallback
        assert "local engine finished" in gen.stats.fallback
        assert gen.stats.completion_tokens <= 160
    finally:
        srv.kill()


def test_the_turns_route_reason_says_the_local_engine_answered(remote: RemoteEngine) -> None:
    engine: Engine = _other(remote, _unused_url())
    assistant = Assistant(_config(_unused_url()), engine)
    turn = assistant.ask("tell me something about the moon", Session())
    assert turn.text and turn.route.intent == assistant.router.fallback and not turn.error
    assert "the local engine answered" in turn.route.reason and "unreachable" in turn.route.reason, turn.route.reason
    assistant.runtime.close()


def test_config_says_what_a_bad_url_needs() -> None:
    with pytest.raises(ValueError, match="not an http"):
        AssistantConfig.model_validate({"engine": {"remote": {"url": "127.0.0.1:8080"}}})


def test_config_check_warns_about_a_key_sent_in_clear() -> None:
    from assistant.config.checks import check_references

    far = _config("http://192.168.1.5:8080/v1")
    assert [p.key for p in check_references(far) if p.key == "engine.remote.url"] == ["engine.remote.url"]
    for fine in (_config("https://192.168.1.5:8080/v1"), _config("http://127.0.0.1:8080/v1")):
        assert not [p for p in check_references(fine) if p.key == "engine.remote.url"]
