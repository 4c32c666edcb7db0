"""The llama.cpp engine with the base model on a GPU (Vulkan, the Mali API) and the draft on the CPU.

`scripts/test.sh` runs these a second time in a Vulkan build of llama.cpp (`.venv-vulkan`) on Mesa's
lavapipe, a software Vulkan device (about 0.6 s per decoded token on 2 cores: the requests are short).
In the CPU build they skip. Greedy output across devices is compared up to near-ties (`greedy.py`):

- GPU vs CPU kernels: logits differ by up to ~0.9 on the default model (lavapipe, measured), so a parting
  is accepted only where the CPU's top two logits are within `GPU_CPU_TIE`;
- the GPU's verify batch vs its one-token decodes: up to ~0.013 (measured), `GPU_BATCH_TIE`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from assistant.engine import ChatMessage
from assistant.engine.llama_cpp import LlamaCppEngine
from assistant.engine.llama_cpp.native import gpu_devices
from assistant.engine.speculative import SpeculativeEngine

from .conftest import DEFAULT_MODEL, ROOT
from .greedy import assert_same_greedy, sequential_logits

GPU_DEVICE = int(os.environ.get("ASSISTANT_TEST_GPU_DEVICE", "0"))  # lavapipe is device 0 where it is the only one
GPU_CPU_TIE = 1.5
GPU_BATCH_TIE = 0.1
TOKENS = 12
QUESTIONS = ["Explain why the sky is blue.", "What is the capital of France?", "Name a fruit that is yellow."]


def chat(text: str) -> list[ChatMessage]:
    return [ChatMessage(role="system", content="You are a concise assistant."), ChatMessage(role="user", content=text)]


@pytest.fixture(scope="module")
def gpu(default_model_path: Path, base_sha: str) -> Iterator[LlamaCppEngine]:
    engine = LlamaCppEngine(
        default_model_path, name=DEFAULT_MODEL, context_size=1024, gpu_layers=99, gpu_device=GPU_DEVICE,
        base_sha256=base_sha,
    )  # fmt: skip
    if not gpu_devices():
        engine.close()
        why = "this llama.cpp build finds no GPU (ASSISTANT_GPU=vulkan scripts/install.sh builds one with Vulkan)"
        if os.environ.get("ASSISTANT_REQUIRE_GPU"):  # scripts/test.sh's Vulkan stage: skipping would hide a break
            pytest.fail(why)
        pytest.skip(why)
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def cpu(default_model_path: Path, base_sha: str) -> Iterator[LlamaCppEngine]:
    engine = LlamaCppEngine(default_model_path, name=DEFAULT_MODEL, context_size=1024, base_sha256=base_sha)
    engine.load_adapter("home", ROOT / "adapters/home/home.gguf")
    yield engine
    engine.close()


def _cpu_logits(cpu: LlamaCppEngine, messages: list[ChatMessage], adapter: str | None = None):  # type: ignore[no-untyped-def]
    return sequential_logits(cpu, cpu.chat_tokens(messages), adapter)


def test_the_gpu_runs_the_model_and_answers_as_the_cpu_does_up_to_near_ties(
    gpu: LlamaCppEngine, cpu: LlamaCppEngine
) -> None:
    assert gpu.batch_variance == LlamaCppEngine.GPU_VARIANCE and gpu.batch_variance_matters
    for question in QUESTIONS:
        ours = gpu.generate(chat(question), max_tokens=TOKENS)
        ours.result()
        reference = cpu.generate(chat(question), max_tokens=TOKENS)
        reference.result()
        assert_same_greedy(ours.tokens, reference.tokens, _cpu_logits(cpu, chat(question)), margin=GPU_CPU_TIE,
                           what=f"vulkan vs cpu: {question}")  # fmt: skip


def test_a_lora_adapter_runs_on_the_gpu(
    gpu: LlamaCppEngine, cpu: LlamaCppEngine, default_model_path: Path, base_sha: str
) -> None:
    # An engine of its own that only ever runs the adapter: on lavapipe, switching a Vulkan context between
    # adapters and the base crashes Mesa's driver thread intermittently (README, GPU: a known defect).
    engine = LlamaCppEngine(default_model_path, name=DEFAULT_MODEL, context_size=1024, gpu_layers=99,
                            gpu_device=GPU_DEVICE, base_sha256=base_sha)  # fmt: skip
    try:
        engine.load_adapter("home", ROOT / "adapters/home/home.gguf")
        messages = chat("turn on the kitchen light")
        ours = engine.generate(messages, max_tokens=TOKENS, adapter="home")
        ours.result()
        again = engine.generate(chat("turn off the fan"), max_tokens=TOKENS, adapter="home")
        again.result()
    finally:
        engine.close()
    base = cpu.generate(messages, max_tokens=TOKENS)
    base.result()
    reference = cpu.generate(messages, max_tokens=TOKENS, adapter="home")
    reference.result()
    assert ours.tokens != base.tokens and again.tokens != ours.tokens  # the adapter is applied on the device
    assert_same_greedy(ours.tokens, reference.tokens, _cpu_logits(cpu, messages, "home"), margin=GPU_CPU_TIE,
                       what="vulkan vs cpu, home adapter")  # fmt: skip


def test_a_cached_prefix_on_the_gpu_gives_the_cold_answer(gpu: LlamaCppEngine) -> None:
    gpu.reset()
    cold = gpu.generate(chat(QUESTIONS[0]), max_tokens=TOKENS)
    cold.result()
    gpu.generate(chat(QUESTIONS[2]), max_tokens=2).result()  # another question in between
    warm = gpu.generate(chat(QUESTIONS[0]), max_tokens=TOKENS)
    warm.result()
    assert warm.stats.cached_tokens > 10  # the system prompt came from its slot on the device
    prompt = gpu.chat_tokens(chat(QUESTIONS[0]))
    assert_same_greedy(warm.tokens, cold.tokens, sequential_logits(gpu, prompt), margin=GPU_BATCH_TIE,
                       what="vulkan warm vs cold")  # fmt: skip


def test_speculation_with_a_gpu_target_and_a_cpu_draft_parts_only_at_near_ties(
    gpu: LlamaCppEngine, default_model_path: Path
) -> None:
    draft = LlamaCppEngine(default_model_path, name="draft", context_size=1024, threads=1, threads_batch=1)
    try:
        spec = SpeculativeEngine(gpu, draft, max_draft=4, fixed_k=4)
        for question in QUESTIONS[:2]:
            gpu.reset()  # both from a cold cache, as the reference logits are computed
            plain = gpu.generate(chat(question), max_tokens=TOKENS)
            plain.result()
            spec.reset()
            fast = spec.generate(chat(question), max_tokens=TOKENS)
            fast.result()
            assert spec.stats.drafted > 0  # the verify batches ran on the GPU
            assert_same_greedy(fast.tokens, plain.tokens, sequential_logits(gpu, gpu.chat_tokens(chat(question))),
                               margin=GPU_BATCH_TIE, what=f"vulkan speculative vs plain: {question}")  # fmt: skip
    finally:
        draft.close()
