"""Everything GPU-related in one command, for a machine with a GPU (or a check of this script without one).

    python -m bench.gpu --json gpu.json [--device 0] [--tokens 64]
    python -m bench.gpu --dry --json dry.json        # no GPU: the same steps on the CPU, tiny sizes (CI)

On the GPU llama.cpp finds (a build with Vulkan, or CUDA via ASSISTANT_LLAMA_CMAKE_ARGS), with the default
model: decode and prefill speed, verify cost by draft length, parity with the CPU build (greedy partings
and the logit gap there), a LoRA adapter on the device, speculation with the CPU draft (speedup, acceptance,
partings from plain greedy and their gaps). Where TVM and a CUDA device are present, the compiled model on
the same GPU (bench.engine's GPU block) and its ratios to llama.cpp. Prints one table, then the JSON.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

from assistant.config import load_config
from assistant.engine import ChatMessage, model_store
from assistant.engine.costmodel import _median_s as median_s
from assistant.engine.llama_cpp import LlamaCppEngine
from assistant.engine.llama_cpp.native import gpu_devices, init_backend
from assistant.engine.speculative import SpeculativeEngine
from assistant.paths import bundled_dir
from bench.engine import BASE, STORY, SYSTEM, chat, gpu_block
from bench.report import emit

QUESTIONS = ["Explain why the sky is blue.", "What is the capital of France?", "Name a fruit that is yellow."]


def _first_parting(ours: list[int], reference: list[int]) -> int | None:
    return next((i for i, (a, b) in enumerate(zip(ours, reference, strict=False)) if a != b), None)


def _gap(engine: LlamaCppEngine, prompt: list[int], prefix: list[int], token: int) -> float:
    """How far below its best the engine rates `token` after the prompt and `prefix` (one-token decodes)."""
    engine.reset()
    engine.prefill(list(prompt))
    for i, t in enumerate(prefix):
        engine._decode([t], len(prompt) + i)
    logits = np.asarray(engine.logits(), dtype=np.float64)
    return float(logits.max() - logits[token])


def _greedy(engine: Any, messages: list[ChatMessage], n: int, adapter: str | None = None) -> Any:
    engine.reset()
    gen = engine.generate(messages, max_tokens=n, adapter=adapter)
    gen.result()
    return gen


def llama_block(path: Path, sha: str, device: int | None, dry: bool, n: int, repeats: int) -> dict[str, Any]:
    layers = 0 if dry else 99
    gpu = LlamaCppEngine(path, name=BASE, context_size=2048, batch_size=512, gpu_layers=layers, gpu_device=device,
                         base_sha256=sha)  # fmt: skip
    cpu = LlamaCppEngine(path, name=BASE, context_size=2048, batch_size=512, base_sha256=sha)
    story = chat(SYSTEM, STORY)
    out: dict[str, Any] = {"gpu_layers": layers, "devices": gpu_devices()}
    _greedy(gpu, story, 4)  # shader/kernel compilation on first use
    out["decode_tok_s"] = round(statistics.median(_greedy(gpu, story, n).stats.decode_tok_s for _ in range(repeats)), 1)
    out["cpu_decode_tok_s"] = round(_greedy(cpu, story, n).stats.decode_tok_s, 1)
    long = (gpu.tokenize(STORY) * 60)[: 64 if dry else 512]
    sizes = (16, 32, 64) if dry else (37, 128, 512)

    def prefill(k: int) -> float:
        def once() -> None:
            gpu.reset()
            gpu.prefill(long[:k])
            gpu.logits()  # waits for the device

        return round(k / median_s(once, repeats), 1)

    out["prefill_tok_s"] = {str(k): prefill(k) for k in sizes}
    prompt = gpu.chat_tokens(story)
    gpu.reset()
    gpu.prefill(prompt)
    verify: dict[str, float] = {}
    for k in (1, 2, 4, 8):
        batch = long[:k]

        def step(batch: list[int] = batch) -> None:
            gpu._decode(batch, len(prompt), all_logits=True)
            gpu.logits()
            gpu.truncate(len(prompt))

        verify[str(k)] = round(median_s(step, repeats) * 1000, 2)
    out["verify_ms"] = verify
    out["verify_8_vs_1"] = round(verify["8"] / verify["1"], 2)
    # Parity with the CPU build: where greedy parts, and how close the CPU's top two were there.
    partings = []
    max_diff = 0.0
    for q in QUESTIONS:
        messages = chat(SYSTEM, q)
        ours, ref = _greedy(gpu, messages, n // 2), _greedy(cpu, messages, n // 2)
        tokens = cpu.chat_tokens(messages)
        for engine in (gpu, cpu):
            engine.reset()
            engine.prefill(list(tokens))
        max_diff = max(max_diff, float(np.abs(np.asarray(gpu.logits()) - np.asarray(cpu.logits())).max()))
        i = _first_parting(ours.tokens, ref.tokens)
        if i is not None:
            partings.append(
                {"question": q, "token": i, "cpu_gap": round(_gap(cpu, tokens, ref.tokens[:i], ours.tokens[i]), 4)}
            )
    out["parity"] = {"prompts": len(QUESTIONS), "tokens": n // 2, "partings": partings,
                     "max_logit_diff_after_prompt": round(max_diff, 4)}  # fmt: skip
    # A LoRA adapter on the device, on a context of its own. Not on Mesa's lavapipe: adapters there crash its
    # driver thread (README, "Known defect"), and a whole bench run would be lost.
    if any("llvmpipe" in d for d in out["devices"]):
        out["lora_decode_ratio"] = out["lora_changes_output"] = "skipped: adapters crash lavapipe (README)"
    else:
        home = bundled_dir("adapters") / "home" / "home.gguf"
        lora = LlamaCppEngine(path, name=BASE, context_size=2048, gpu_layers=layers, gpu_device=device,
                              base_sha256=sha)  # fmt: skip
        lora.load_adapter("home", home)
        with_adapter = _greedy(lora, story, n, "home")
        out["lora_decode_ratio"] = round(with_adapter.stats.decode_tok_s / out["decode_tok_s"], 3)
        out["lora_changes_output"] = with_adapter.tokens != _greedy(gpu, story, n).tokens
        lora.close()
    # Speculation across devices: the target here, the draft on the CPU.
    draft = LlamaCppEngine(path, name="draft", context_size=2048, threads=1, threads_batch=1)
    spec = SpeculativeEngine(gpu, draft, max_draft=8)
    cost = spec.calibrate()
    plain = _greedy(gpu, story, n)
    spec.fixed_k = 4  # forced, so the verify path runs even where the cost model would not speculate
    fast = _greedy(spec, story, n)
    i = _first_parting(fast.tokens, plain.tokens)
    gap = None if i is None else round(_gap(gpu, gpu.chat_tokens(story), plain.tokens[:i], fast.tokens[i]), 4)
    out["speculation"] = {
        "cost_model_k": cost.best_k(0.7, 8)[0],
        "draft_ms": round(cost.draft_s * 1000, 2),
        "verify_ms_fit": [round(v * 1000, 2) for v in cost.verify_s],
        "forced_k": 4,
        "speedup_at_k4": round(fast.stats.decode_tok_s / max(plain.stats.decode_tok_s, 1e-9), 3),
        "acceptance": round(spec.stats.acceptance, 3),
        "identical_to_greedy": i is None,
        "parted_at": i,
        "gap_at_parting": gap,
        "batch_variance": gpu.batch_variance,
    }  # fmt: skip
    draft.close()
    cpu.close()
    gpu.close()
    return out


def table(results: dict[str, Any]) -> str:
    ll, tvm = results["llama_cpp"], results.get("tvm_cuda") or {}
    rows = [
        ("decode tok/s", ll["decode_tok_s"], tvm.get("decode_tok_s")),
        *((f"prefill tok/s ({k})", v, None) for k, v in ll["prefill_tok_s"].items()),
        *((f"verify ms (k={k})", v, None) for k, v in ll["verify_ms"].items()),
        ("verify(8) / verify(1)", ll["verify_8_vs_1"], None),
        ("CPU partings (of 3)", len(ll["parity"]["partings"]), None),
        ("max logit diff vs CPU", ll["parity"]["max_logit_diff_after_prompt"], None),
        ("LoRA decode ratio", ll["lora_decode_ratio"], tvm.get("lora_decode_ratio")),
        ("speculation k=4 speedup", ll["speculation"]["speedup_at_k4"], tvm.get("speculation_speedup")),
        ("speculation = greedy", ll["speculation"]["identical_to_greedy"], tvm.get("speculation_lossless")),
    ]
    lines = [f"{'':28} {'llama.cpp':>12} {'TVM cuda':>12}"]
    lines += [f"{name:28} {a!s:>12} {'' if b is None else b!s:>12}" for name, a, b in rows]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", type=Path, help="Also write the results to this file.")
    parser.add_argument("--dry", action="store_true", help="No GPU: every step on the CPU with tiny sizes.")
    parser.add_argument("--device", type=int, default=None, help="Vulkan device index (engine.gpu_device).")
    parser.add_argument("--tokens", type=int, default=64, help="Tokens per greedy run.")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    n, repeats = (8, 1) if args.dry else (args.tokens, args.repeats)
    init_backend(args.device)  # before anything starts llama.cpp: ggml lists its Vulkan devices then
    store = model_store(load_config())
    manifest = store.get(BASE)
    path = store.prepare(manifest)
    t0 = time.perf_counter()
    results: dict[str, Any] = {"model": BASE, "dry": args.dry}
    if not args.dry and not gpu_devices():
        raise SystemExit("no GPU: this llama.cpp build finds none (ASSISTANT_GPU=vulkan scripts/install.sh), "
                         "or run --dry")  # fmt: skip
    results["llama_cpp"] = llama_block(path, manifest.sha256 or "", args.device, args.dry, n, repeats)
    block = None
    if not args.dry:
        draft = LlamaCppEngine(path, name="draft", context_size=2048, threads=1, threads_batch=1)
        try:
            block = gpu_block(path, manifest.sha256 or "", draft, n, repeats)
        except ImportError:  # no tvm extra: llama.cpp alone
            block = None
        finally:
            draft.close()
    if block is not None:
        block["decode_ratio_to_llama_cpp"] = round(block["decode_tok_s"] / results["llama_cpp"]["decode_tok_s"], 3)
    results["tvm_cuda"] = block
    results["seconds"] = round(time.perf_counter() - t0, 1)
    print(table(results), flush=True)
    emit(results, args.json)


if __name__ == "__main__":
    main()
