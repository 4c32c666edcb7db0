"""Each engine capability on the standard profile's models: the Qwen2.5-Coder-1.5B base users get,
with the 0.5B as its draft (the rest of the suite runs them on the fast 135M small profile)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from assistant.config import load_config
from assistant.engine import ChatMessage, load_engine
from assistant.engine.llama_cpp import LlamaCppEngine
from assistant.engine.speculative import SpeculativeEngine
from assistant.modelstore import ModelStore
from assistant.pipeline import Assistant

from .conftest import STANDARD_MODEL
from .greedy import CROSS_RUNTIME_TIE, assert_same_greedy, sequential_logits
from .lora_util import make_lora

pytestmark = pytest.mark.slow
DRAFT = "qwen2.5-coder-0.5b-instruct-q4_k_m"
SYSTEM = ChatMessage(role="system", content="You are a concise assistant.")
FACTS = [
    ("What is the capital of France?", "paris"),
    ("Who wrote Romeo and Juliet?", "shakespeare"),
    ("What is the largest planet in our solar system?", "jupiter"),
    ("What is the boiling point of water in Celsius?", "100|one hundred"),
    ("How many legs does a spider have?", "eight|8"),
    ("What gas do plants absorb from the air?", "carbon dioxide|co2"),
]
# Qwen2.5-1.5B: hidden 1536, 2 KV heads of 128, 28 layers.
SHAPES = {"attn_q": (1536, 1536), "attn_v": (256, 1536)}


def chat(text: str) -> list[ChatMessage]:
    return [SYSTEM, ChatMessage(role="user", content=text)]


@pytest.fixture(scope="module")
def draft(tests_store: ModelStore, standard_model_path: Path) -> Iterator[LlamaCppEngine]:
    path = tests_store.prepare(tests_store.get(DRAFT))
    eng = LlamaCppEngine(path, name=DRAFT, context_size=2048, threads=1, threads_batch=1)
    yield eng
    eng.close()


def test_the_standard_base_answers_everyday_facts(standard_engine: LlamaCppEngine) -> None:
    """The reason for the profile: the 135M base gets a third to half of such questions wrong."""
    right = []
    for question, answer in FACTS:
        text = standard_engine.generate(chat(question), max_tokens=32).result()
        right.append(bool(re.search(rf"\b({answer})\b", text.lower())))
    assert sum(right) >= len(FACTS) - 1, right  # measured: all six


def test_a_cached_system_prompt_gives_the_cold_answer(standard_engine: LlamaCppEngine) -> None:
    standard_engine.reset()
    cold = standard_engine.generate(chat("Name three primary colors."), max_tokens=24)
    cold.result()
    warm = standard_engine.generate(chat("Name three primary colors."), max_tokens=24)
    warm.result()
    assert warm.stats.cached_tokens == warm.stats.prompt_tokens - 1 and warm.tokens == cold.tokens


def test_lora_on_the_standard_base_moves_logits_and_switches_back_exactly(
    standard_engine: LlamaCppEngine, tmp_path: Path
) -> None:
    sha = ModelStore().get(STANDARD_MODEL).sha256 or ""
    path = make_lora(tmp_path / "skew15.gguf", sha, seed=3, layers=28, shapes=SHAPES, base_model=STANDARD_MODEL,
                     architecture="qwen2", strength=0.05)  # fmt: skip
    standard_engine.load_adapter("skew15", path)
    prompt = standard_engine.prompt_tokens(chat("Say something about the sea."))[0]
    standard_engine.reset()
    standard_engine.prefill(prompt)
    base = np.array(standard_engine.logits())
    standard_engine.prefill(prompt, adapter="skew15")
    skewed = np.array(standard_engine.logits())
    assert float(np.abs(skewed - base).max()) > 0.5  # the adapter is really applied
    standard_engine.reset()
    standard_engine.prefill(prompt)
    assert np.array_equal(np.array(standard_engine.logits()), base)  # and really switched off again


def test_speculation_with_the_real_draft_parts_from_plain_greedy_only_at_near_ties(
    standard_engine: LlamaCppEngine, draft: LlamaCppEngine
) -> None:
    """This CPU's Q4_K kernels round a verify batch differently from one-token decodes (calibrate says so),
    so greedy equality holds up to near-ties: a parting anywhere else fails."""
    spec = SpeculativeEngine(standard_engine, draft, max_draft=4, fixed_k=4)
    for question in ["Explain why the sky is blue.", "How do I boil an egg?"]:
        messages = chat(question)
        standard_engine.reset()
        plain = standard_engine.generate(messages, max_tokens=40)
        plain.result()
        standard_engine.reset()
        fast = spec.generate(messages, max_tokens=40)
        fast.result()
        prompt = standard_engine.prompt_tokens(messages)[0]
        logits = sequential_logits(standard_engine, prompt)
        assert_same_greedy(fast.tokens, plain.tokens, logits, margin=CROSS_RUNTIME_TIE, what="speculative vs plain")
    assert spec.stats.drafted > 0 and spec.stats.acceptance > 0.5  # measured 0.69-0.71 (FACTS)


def test_the_default_config_builds_the_standard_assistant(standard_model_path: Path) -> None:
    """No config file: the 1.5B base, its draft behind the cost model, and the classifier deciding."""
    cfg = load_config()
    engine = load_engine(cfg)
    try:
        assert isinstance(engine, SpeculativeEngine) and engine.base_model == STANDARD_MODEL
        k, _ = engine.cost.best_k(engine.acceptance(), engine.max_draft)
        assert k >= 0  # on this CPU the verify batch costs too much: measured k = 0 (README)
        assistant = Assistant(cfg, engine)
        assert assistant.router.classifier is not None and assistant.router.classifier.llm_decides  # type: ignore[attr-defined]
        assert "classifier" in assistant.warm()
        reply = assistant.ask("could you tell me what the capital of italy is")
        assert reply.route.intent == "chat.answer" and "rome" in reply.text.lower()
        assert assistant.ask("turn on the kitchen light").route.skill == "home"  # no devices: it says so
    finally:
        engine.close()


# --- the router adapter trained on the standard base ----------------------------------------------------


def test_standard_router_adapter_is_current_and_gains_on_its_held_out_task(
    standard_engine: LlamaCppEngine, tests_store: ModelStore
) -> None:
    """The shared-base + LoRA path on the model users get: the router adapter trained on the 1.5B (last 10
    layers, packed batches) against the same base on the same plain prompt, over its 64 held-out cases.
    The report must be this recipe's, and the runtime must reproduce its gain (measured 0.625 -> 0.922)."""
    from assistant.engine.lora import read_adapter_manifest
    from assistant.training import ADAPTERS_DIR, AdapterProject, evaluate

    skill = AdapterProject("router", ADAPTERS_DIR / "standard")
    manifest = read_adapter_manifest(skill.adapter_path)
    assert manifest is not None and manifest.base_sha256 == tests_store.get(STANDARD_MODEL).sha256
    assert skill.adapter_path.stat().st_size < 5_000_000
    report = json.loads((skill.dir / "eval.json").read_text())
    assert report["recipe_sha256"] == skill.recipe_sha256 == manifest.recipe_sha256
    assert f"{report['adapter_metric']:.1%}" in (skill.dir / "README.md").read_text()
    got = evaluate(skill, standard_engine, skill.adapter_path)  # on this CPU's kernels
    assert got.cases == 64 and got.adapter_metric >= 0.85
    assert got.adapter_metric - got.base_metric >= 0.15, (got.base_metric, got.adapter_metric)
