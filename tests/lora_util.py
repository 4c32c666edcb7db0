"""Random but real GGUF LoRA adapters for the default base model."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from assistant.engine.lora import AdapterManifest, write_gguf_lora

# SmolLM2-135M: hidden 576, 3 KV heads of 64, 30 layers.
SHAPES = {"attn_q": (576, 576), "attn_v": (192, 576)}


def make_lora(
    path: Path,
    base_sha256: str,
    *,
    seed: int,
    rank: int = 8,
    layers: int = 30,
    shapes: dict[str, tuple[int, int]] | None = None,
    strength: float = 0.08,
    base_model: str = "smollm2-135m-instruct-q4_1",
    architecture: str = "llama",
) -> Path:
    rng = np.random.default_rng(seed)
    pairs = {}
    for layer in range(layers):
        for module, (n_out, n_in) in (shapes or SHAPES).items():
            a = rng.normal(0, 1 / np.sqrt(n_in), size=(rank, n_in))
            b = rng.normal(0, strength, size=(n_out, rank))
            pairs[f"blk.{layer}.{module}.weight"] = (a, b)
    manifest = AdapterManifest(
        name=path.stem, base_model=base_model, base_sha256=base_sha256, rank=rank,
        alpha=float(rank), target_modules=sorted(shapes or SHAPES),
    )  # fmt: skip
    write_gguf_lora(path, architecture=architecture, alpha=float(rank), pairs=pairs, manifest=manifest)
    return path
