"""TVM backend: 4-bit kernels on the real default model's weights, and targets (CPU here, GPU when
there is one, Mali as a cross-compile)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from assistant.engine import EngineError

tvm = pytest.importorskip("tvm", reason="the tvm extra (scripts/test.sh installs it)")

from assistant.engine.tvm import (  # noqa: E402
    Q4_1Weight,
    device_available,
    q4_1_matmul,
    read_q4_1,
    resolve_target,
    schedule_cpu,
    schedule_gpu,
)

FFN_UP = "blk.0.ffn_up.weight"


@pytest.fixture(scope="module")
def ffn_up(default_model_path: Path) -> Q4_1Weight:
    return read_q4_1(default_model_path, [FFN_UP])[FFN_UP]


def test_q4_1_split_is_the_gguf_dequantization(default_model_path: Path, ffn_up: Q4_1Weight) -> None:
    import gguf

    reader = gguf.GGUFReader(str(default_model_path))
    tensor = next(t for t in reader.tensors if t.name == FFN_UP)
    reference = gguf.quants.dequantize(np.asarray(tensor.data), tensor.tensor_type).reshape(ffn_up.shape)
    assert ffn_up.shape == (1536, 576)
    assert ffn_up.codes.nbytes + ffn_up.scales.nbytes + ffn_up.mins.nbytes == np.asarray(tensor.data).nbytes
    np.testing.assert_array_equal(ffn_up.dequantize(), reference)


def test_a_tensor_of_another_type_or_name_is_refused(default_model_path: Path) -> None:
    with pytest.raises(EngineError, match="tensor output_norm.weight is F32, not Q4_1"):
        read_q4_1(default_model_path, ["output_norm.weight"])
    with pytest.raises(EngineError, match="no tensor named nope"):
        read_q4_1(default_model_path, [FFN_UP, "nope"])


def _run(mod: object, device: object, x: np.ndarray, w: Q4_1Weight) -> np.ndarray:
    args = [tvm.runtime.tensor(a, device) for a in (x, w.codes, w.scales, w.mins)]
    out = tvm.runtime.tensor(np.zeros((x.shape[0], w.shape[0]), np.float32), device)
    mod(*args, out)  # type: ignore[operator]
    return np.asarray(out.numpy())


def test_cpu_kernel_computes_the_dequantized_matmul_for_decode_and_prefill(ffn_up: Q4_1Weight) -> None:
    """One compiled function, any row count: decode (1 row) and prefill (7 rows)."""
    out_f, in_f = ffn_up.shape
    mod = tvm.compile(schedule_cpu(q4_1_matmul(out_f, in_f)), target=resolve_target("llvm"))
    reference = ffn_up.dequantize()
    rng = np.random.default_rng(0)
    for rows in (1, 7):
        x = rng.standard_normal((rows, in_f)).astype(np.float32)
        got = _run(mod, tvm.cpu(), x, ffn_up)
        np.testing.assert_allclose(got, x @ reference.T, rtol=1e-4, atol=1e-3)


def test_llvm_target_names_this_cpu_not_a_generic_one() -> None:
    target = resolve_target("llvm", threads=2)
    assert str(target.attrs["mcpu"]) == tvm.target.codegen.llvm_get_system_cpu() != "generic"
    with pytest.raises(ValueError, match="unknown target kind"):
        resolve_target("metal")  # type: ignore[arg-type]


def test_mali_opencl_cross_compiles_to_a_library_the_device_loads(tmp_path: Path, ffn_up: Q4_1Weight) -> None:
    out_f, in_f = ffn_up.shape
    mod = tvm.compile(schedule_gpu(q4_1_matmul(out_f, in_f)), target=resolve_target("opencl-mali"))
    source = "\n".join(m.inspect_source() for m in mod.mod.imports if m.kind == "opencl")
    assert "__kernel" in source and "uchar" in source  # packed codes reach the device as bytes
    library = tmp_path / "q4_matmul-mali.tar"
    mod.export_library(str(library))  # objects for aarch64 + OpenCL source; linked on the device
    assert library.stat().st_size > 0
    assert not device_available("opencl-mali")


@pytest.mark.parametrize("kind", ["cuda", "vulkan"])
def test_gpu_kernel_computes_the_dequantized_matmul(kind: str, ffn_up: Q4_1Weight) -> None:
    if not device_available(kind):  # type: ignore[arg-type]
        pytest.skip(f"no {kind} device on this machine")
    out_f, in_f = ffn_up.shape
    mod = tvm.compile(schedule_gpu(q4_1_matmul(out_f, in_f)), target=resolve_target(kind))  # type: ignore[arg-type]
    x = np.random.default_rng(1).standard_normal((3, in_f)).astype(np.float32)
    device = tvm.cuda(0) if kind == "cuda" else tvm.vulkan(0)
    np.testing.assert_allclose(_run(mod, device, x, ffn_up), x @ ffn_up.dequantize().T, rtol=1e-4, atol=1e-3)


# --- the compiled model ---------------------------------------------------------------------------------

PROMPTS = ["What is the capital of France?", "Tell me a joke."]


@pytest.fixture(scope="module")
def compiled(default_model_path: Path, base_sha: str, tmp_path_factory: pytest.TempPathFactory) -> object:
    from assistant.engine.tvm.runtime import TvmLlama

    return TvmLlama(default_model_path, base_sha, tmp_path_factory.mktemp("tvm-cache"), context_size=1024)


def _llama_cpp_greedy(engine: object, prompt: list[int], n: int, adapter: str | None = None) -> list[int]:
    out: list[int] = []
    engine.reset()  # type: ignore[attr-defined]
    engine.prefill(prompt, adapter=adapter)  # type: ignore[attr-defined]
    while len(out) < n:
        out.append(int(np.argmax(np.array(engine.logits()))))  # type: ignore[attr-defined]
        if engine.is_eog(out[-1]):  # type: ignore[attr-defined]
            break
        engine.prefill(prompt + out, adapter=adapter)  # type: ignore[attr-defined]  # cached prefix: one new token
    return out


@pytest.mark.slow
@pytest.mark.parametrize("question", PROMPTS)
def test_compiled_model_greedy_is_token_identical_to_llama_cpp(compiled: object, engine: object, question: str) -> None:
    from assistant.engine import ChatMessage

    prompt = engine.tokenize(engine.apply_chat_template([ChatMessage(role="user", content=question)]), special=True)  # type: ignore[attr-defined]
    reference = _llama_cpp_greedy(engine, prompt, 24)
    stop = {t for t in reference if engine.is_eog(t)}  # type: ignore[attr-defined]
    assert compiled.greedy(prompt, len(reference), stop) == reference  # type: ignore[attr-defined]


@pytest.mark.slow
def test_compiled_logits_follow_llama_cpp_over_a_long_prompt(compiled: object, engine: object) -> None:
    """Chunked prefill through the paged KV cache: the logits after 300 tokens still agree."""
    prompt = engine.tokenize("The history of the light bulb. " * 50)[:300]  # type: ignore[attr-defined]
    compiled.prefill_chunk = 128  # type: ignore[attr-defined]
    compiled.reset()  # type: ignore[attr-defined]
    ours = compiled.prefill(prompt)  # type: ignore[attr-defined]
    engine.reset()  # type: ignore[attr-defined]
    engine.prefill(prompt)  # type: ignore[attr-defined]
    theirs = np.array(engine.logits())  # type: ignore[attr-defined]
    assert np.corrcoef(ours, theirs)[0, 1] > 0.995
    assert int(np.argmax(ours)) == int(np.argmax(theirs))


@pytest.mark.slow
def test_adapters_are_run_time_inputs_of_the_compiled_graph(compiled: object, engine: object) -> None:
    """Two adapters resident, switched per request by slot: the same tokens as llama.cpp's runtime LoRA."""
    from assistant.adapters import AdapterProject

    home, chat = AdapterProject("home"), AdapterProject("chat")
    for project in (home, chat):
        compiled.load_adapter(project.name, project.adapter_path)  # type: ignore[attr-defined]
        engine.load_adapter(project.name, project.adapter_path)  # type: ignore[attr-defined]
    cases = [(home, home.heldout_examples()[0]), (chat, chat.heldout_examples()[1]), (None, chat.heldout_examples()[1])]
    for project, example in cases:
        name = project.name if project else None
        prompt = engine.prompt_tokens(example.messages)[0]  # type: ignore[attr-defined]
        reference = _llama_cpp_greedy(engine, prompt, 20, adapter=name)
        stop = {t for t in reference if engine.is_eog(t)}  # type: ignore[attr-defined]
        assert compiled.greedy(prompt, len(reference), stop, adapter=name) == reference, name  # type: ignore[attr-defined]
        if project is home:  # the adapter really acts: the base says something else here
            assert compiled.greedy(prompt, len(reference), stop) != reference  # type: ignore[attr-defined]
    with pytest.raises(EngineError, match="unknown adapter 'nope'"):
        compiled.greedy(prompt, 2, adapter="nope")  # type: ignore[attr-defined]


@pytest.mark.slow
@pytest.mark.parametrize("question", [*PROMPTS, "How do I boil an egg?"])
def test_cpu_draft_speculation_on_the_compiled_target_is_lossless(
    compiled: object, engine: object, question: str
) -> None:
    """llama.cpp drafts, the TVM build verifies k tokens per pass: exactly the TVM build's own greedy output."""
    from assistant.engine import ChatMessage
    from assistant.engine.tvm.speculative import speculative_greedy

    prompt = engine.tokenize(engine.apply_chat_template([ChatMessage(role="user", content=question)]), special=True)  # type: ignore[attr-defined]
    stop = {t for t in range(8) if engine.is_eog(t)}  # type: ignore[attr-defined]  # SmolLM2's end-of-text ids
    plain = compiled.greedy(prompt, 32, stop)  # type: ignore[attr-defined]
    spec, stats = speculative_greedy(compiled, engine, prompt, 32, k=4, stop=stop)  # type: ignore[arg-type]
    assert spec == plain
    assert stats.rounds < len(plain) and stats.acceptance > 0.5  # the draft (same weights, other runtime) agrees


def test_compiled_artifact_is_reused_and_a_foreign_one_rebuilt(
    default_model_path: Path, base_sha: str, compiled: object, tmp_path: Path
) -> None:
    import json

    from assistant.engine.tvm.model import compile_model

    cache = tmp_path / "cache"
    library, names, first = compile_model(default_model_path, base_sha, "llvm", cache)
    assert first > 0 and library.is_file() and "layers.0.qkv.codes" in names
    assert compile_model(default_model_path, base_sha, "llvm", cache)[2] == 0.0  # cached: no compile
    stamp = library.parent / "key.json"
    stamp.write_text(json.dumps({**json.loads(stamp.read_text()), "tvm_version": "0.1"}))
    assert compile_model(default_model_path, base_sha, "llvm", cache)[2] > 0  # not this TVM's: rebuilt


def test_a_model_of_another_architecture_is_refused_clearly(tmp_path: Path) -> None:
    from assistant.config import load_config
    from assistant.engine.tvm.model import compile_model
    from assistant.modelstore import ModelStore

    store = ModelStore.from_config(load_config())
    qwen = store.get("qwen2.5-coder-0.5b-instruct-q4_k_m")
    if store.missing_packages(qwen):
        pytest.skip("optional Qwen2.5 packages not installed (scripts/test.sh installs them)")
    with pytest.raises(EngineError, match="builds llama models; this one is 'qwen2'"):
        compile_model(store.prepare(qwen), "0" * 64, "llvm", tmp_path)


def test_models_compile_names_what_it_cannot_build_yet() -> None:
    from typer.testing import CliRunner

    from assistant.cli import app

    result = CliRunner().invoke(app, ["models", "compile", "--target", "metal"])
    assert result.exit_code == 2 and "unknown target 'metal'" in result.output
    result = CliRunner().invoke(app, ["models", "compile", "--target", "opencl-mali"])
    assert result.exit_code == 1 and "not built yet" in result.output and "kernels" in result.output
