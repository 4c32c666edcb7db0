"""peft LoRA (safetensors) → the GGUF LoRA that llama.cpp applies at run time.

llama.cpp's own converter script is not in the installed package, so this is ours, written with
the `gguf` package through `write_gguf_lora`. Two details decide whether the runtime computes what
peft trained:

- Tensor names: peft's `model.layers.N.self_attn.q_proj` is GGUF's `blk.N.attn_q`, and so on.
- Llama's GGUF files store Q and K with their rows permuted for llama.cpp's RoPE layout
  (transformers undoes that when it loads a GGUF). W' = W + B·A, so B's rows get the same
  permutation; A is untouched. Qwen2 files keep HF's order (NeoX RoPE): nothing is permuted.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from assistant.engine.lora import AdapterError, AdapterManifest, write_gguf_lora

HF_TO_GGUF = {
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}
_KEY = re.compile(
    r"layers\.(\d+)\.(self_attn\.[qkvo]_proj|mlp\.(?:gate|up|down)_proj)\.lora_([AB])(?:\.[^.]+)?\.weight$"
)


def rope_permute(rows: np.ndarray, n_head: int) -> np.ndarray:
    """HF → GGUF row order of a Q or K projection (llama.cpp's convert script does the same to W)."""
    shape = rows.shape
    return rows.reshape(n_head, 2, shape[0] // n_head // 2, *shape[1:]).swapaxes(1, 2).reshape(shape)


PERMUTED_QK = {"llama"}  # architectures whose GGUF stores Q/K rows in llama.cpp's RoPE order


def gguf_pairs(
    tensors: dict[str, np.ndarray], *, n_head: int, n_head_kv: int, architecture: str = "llama"
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """peft state dict → {GGUF base tensor name: (A, B)}, with Q/K rows permuted where the GGUF does."""
    parts: dict[str, dict[str, np.ndarray]] = {}
    for key, value in tensors.items():
        m = _KEY.search(key)
        if m is None:
            raise AdapterError(f"peft tensor {key!r} is not a LoRA A/B of a Llama projection; cannot convert it")
        layer, module, which = m.groups()
        parts.setdefault(f"blk.{layer}.{HF_TO_GGUF[module]}.weight", {})[which] = np.asarray(value, np.float32)
    pairs = {}
    for name, ab in sorted(parts.items()):
        if set(ab) != {"A", "B"}:
            raise AdapterError(f"{name}: the peft file has only lora_{next(iter(ab))}")
        a, b = ab["A"], ab["B"]
        if architecture in PERMUTED_QK and ".attn_q." in name:
            b = rope_permute(b, n_head)
        elif architecture in PERMUTED_QK and ".attn_k." in name:
            b = rope_permute(b, n_head_kv)
        pairs[name] = (a, b)
    return pairs


def convert_peft(
    peft_dir: Path,
    out: Path,
    *,
    name: str,
    base_model: str,
    base_sha256: str,
    n_head: int,
    n_head_kv: int,
    architecture: str = "llama",
    recipe_sha256: str | None = None,
    description: str = "",
) -> AdapterManifest:
    """A peft adapter directory (adapter_config.json + adapter_model.safetensors) → GGUF + manifest."""
    from safetensors.numpy import load_file

    weights, config_file = peft_dir / "adapter_model.safetensors", peft_dir / "adapter_config.json"
    for f in (weights, config_file):
        if not f.is_file():
            raise AdapterError(f"peft adapter {peft_dir}: {f.name} is missing (only safetensors adapters are read)")
    config = json.loads(config_file.read_text())
    rank, alpha = int(config["r"]), float(config["lora_alpha"])
    pairs = gguf_pairs(load_file(str(weights)), n_head=n_head, n_head_kv=n_head_kv, architecture=architecture)
    targets = sorted(set(config.get("target_modules") or []))
    manifest = AdapterManifest(
        name=name, base_model=base_model, base_sha256=base_sha256, rank=rank, alpha=alpha,
        target_modules=targets, recipe_sha256=recipe_sha256, description=description,
    )  # fmt: skip
    out.parent.mkdir(parents=True, exist_ok=True)
    # float16 halves the file (rank 16 on q,k,v,o of the 135M base: 7.4 -> 3.7 MB); the runtime reads it as is.
    write_gguf_lora(out, architecture=architecture, alpha=alpha, pairs=pairs, manifest=manifest, dtype="float16")
    return manifest
