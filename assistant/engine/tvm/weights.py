"""The GGUF read into the arrays the compiled graph takes (MLC-LLM's `*_loader.py`), and its shape.

Matrices stay 4-bit (GGUF Q4_1 blocks, repacked as codes, scales and mins) and the embedding /
output head Q8_0 (codes and scales): no float copies. TVM's paged KV cache applies RoPE in the
rotate-half convention: GGUF stores Q and K rows interleaved for llama.cpp's RoPE, so their rows
are put back in half order at load (a row permutation of the packed blocks, nothing dequantized).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from gguf import GGMLQuantizationType, GGUFReader

from assistant.engine.tvm.quant import Q4_1Weight
from assistant.engine.types import EngineError
from assistant.modelstore.gguf_header import GGUFLayout, read_layout

_Q8_BLOCK_BYTES = 34
LORA_SLOTS = 4  # adapters resident at once (requests without one run the graph without LoRA terms)
LORA_RANK = 16  # the largest rank per projection; smaller ranks are zero-padded
_MATRICES = {"attn_q": "q", "attn_k": "k", "attn_v": "v", "attn_output": "o", "ffn_gate": "gate", "ffn_up": "up",
             "ffn_down": "down"}  # fmt: skip


ARCHITECTURES = ("llama", "qwen2")  # Qwen2: the Llama graph plus q/k/v biases, rotate-half RoPE in the GGUF


@dataclass(frozen=True)
class LlamaShape:
    """What the compiled graph depends on, read from the GGUF metadata."""

    layers: int
    hidden: int
    ffn: int
    heads: int
    kv_heads: int
    vocab: int
    rope_theta: float
    eps: float
    arch: str = "llama"
    tied: bool = True  # the output head is the token embedding

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    @property
    def qkv_bias(self) -> bool:
        return self.arch == "qwen2"

    @property
    def interleaved_rope(self) -> bool:
        """llama.cpp's converter permutes Llama's Q/K rows for its interleaved RoPE; Qwen2 keeps HF's order."""
        return self.arch == "llama"

    @classmethod
    def from_gguf(cls, gguf: GGUFLayout) -> LlamaShape:
        path = gguf.path

        def field(key: str) -> Any:
            if key not in gguf.fields:
                raise EngineError(f"{path}: GGUF metadata {key} is missing")
            return gguf.fields[key]

        arch = field("general.architecture")
        if arch not in ARCHITECTURES:
            raise EngineError(
                f"{path}: the TVM backend builds {' and '.join(ARCHITECTURES)} models; this one is '{arch}'"
            )
        for t in gguf.tensors.values():
            matrix = t.name.startswith("blk.") and t.name.endswith(".weight") and len(t.shape) == 2
            want = GGMLQuantizationType.Q4_1 if matrix else GGMLQuantizationType.Q8_0
            if (matrix or t.name in ("token_embd.weight", "output.weight")) and t.type != want:
                raise EngineError(
                    f"{path}: tensor {t.name} is {t.type.name}; the TVM backend compiles Q4_1 matrices and a "
                    "Q8_0 embedding/head (re-quantize: a manifest source of kind 'quantized', ftype 'Q4_1', "
                    "embedding 'Q8_0')"
                )
        return cls(
            layers=int(field(f"{arch}.block_count")), hidden=int(field(f"{arch}.embedding_length")),
            ffn=int(field(f"{arch}.feed_forward_length")), heads=int(field(f"{arch}.attention.head_count")),
            kv_heads=int(field(f"{arch}.attention.head_count_kv")),
            vocab=int(field("tokenizer.ggml.tokens")),  # the array's length
            rope_theta=float(field(f"{arch}.rope.freq_base")),
            eps=float(field(f"{arch}.attention.layer_norm_rms_epsilon")),
            arch=arch, tied="output.weight" not in gguf.tensors,
        )  # fmt: skip


def open_gguf(path: Path) -> GGUFLayout:
    try:
        return read_layout(path)
    except (OSError, ValueError) as exc:  # GGUFHeaderError is a ValueError
        raise EngineError(f"{path}: cannot read GGUF: {exc}") from exc


def _halves_order(rows: int, heads: int) -> np.ndarray:
    """Row index taking each head from llama.cpp's (0, d/2, 1, d/2+1, ...) order back to (0..d/2-1, d/2..d-1)."""
    return np.arange(rows).reshape(heads, rows // heads // 2, 2).transpose(0, 2, 1).reshape(-1)


def _interleaved_to_halves(w: Q4_1Weight, heads: int) -> Q4_1Weight:
    idx = _halves_order(w.codes.shape[0], heads)
    return Q4_1Weight(w.codes[idx], w.scales[idx], w.mins[idx])


def load_weights(gguf: GGUFLayout, shape: LlamaShape) -> dict[str, np.ndarray]:
    """Parameter name -> array, in the packed layouts the compiled graph takes (no float copies of matrices)."""
    path = gguf.path

    def get(name: str, kind: GGMLQuantizationType) -> np.ndarray:
        t = gguf.tensors.get(name)
        if t is None:
            raise EngineError(f"{path}: tensor {name} is missing")
        if t.type != kind:
            raise EngineError(f"{path}: tensor {name} is {t.type.name}; the TVM backend needs {kind.name}")
        return gguf.array(name)

    def q8_table(name: str, prefix: str) -> None:
        table = get(name, GGMLQuantizationType.Q8_0).reshape(shape.vocab, -1, _Q8_BLOCK_BYTES)
        out[f"{prefix}.scales"] = np.ascontiguousarray(table[:, :, :2]).view(np.float16)[..., 0]
        out[f"{prefix}.codes"] = np.ascontiguousarray(table[:, :, 2:]).view(np.int8)

    out: dict[str, np.ndarray] = {}
    for i in range(shape.layers):
        w = {
            ours: Q4_1Weight.from_blocks(get(f"blk.{i}.{gguf_name}.weight", GGMLQuantizationType.Q4_1))
            for gguf_name, ours in _MATRICES.items()
        }
        if shape.interleaved_rope:
            w["q"] = _interleaved_to_halves(w["q"], shape.heads)
            w["k"] = _interleaved_to_halves(w["k"], shape.kv_heads)
        # One matmul for q, k and v, one for gate and up: rows stacked, fewer kernel launches.
        for ours, parts in (("qkv", ("q", "k", "v")), ("o", ("o",)), ("gate_up", ("gate", "up")), ("down", ("down",))):
            for field in ("codes", "scales", "mins"):
                out[f"layers.{i}.{ours}.{field}"] = np.concatenate([getattr(w[p], field) for p in parts])
        if shape.qkv_bias:
            out[f"layers.{i}.qkv.bias"] = np.concatenate(
                [get(f"blk.{i}.attn_{p}.bias", GGMLQuantizationType.F32) for p in ("q", "k", "v")]
            )
        qkv_rows, o_rows = out[f"layers.{i}.qkv.codes"].shape[0], out[f"layers.{i}.o.codes"].shape[0]
        out[f"layers.{i}.qkv.lora_a"] = np.zeros((LORA_SLOTS, 3 * LORA_RANK, shape.hidden), np.float32)
        out[f"layers.{i}.qkv.lora_b"] = np.zeros((LORA_SLOTS, qkv_rows, 3 * LORA_RANK), np.float32)
        out[f"layers.{i}.o.lora_a"] = np.zeros((LORA_SLOTS, LORA_RANK, shape.hidden), np.float32)
        out[f"layers.{i}.o.lora_b"] = np.zeros((LORA_SLOTS, o_rows, LORA_RANK), np.float32)
        out[f"layers.{i}.attn_norm.weight"] = get(f"blk.{i}.attn_norm.weight", GGMLQuantizationType.F32)
        out[f"layers.{i}.ffn_norm.weight"] = get(f"blk.{i}.ffn_norm.weight", GGMLQuantizationType.F32)
    out["norm.weight"] = get("output_norm.weight", GGMLQuantizationType.F32)
    q8_table("token_embd.weight", "embed")
    if not shape.tied:
        q8_table("output.weight", "head")
    return out


def lora_slot_arrays(path: Path, shape: LlamaShape, scale: float = 1.0) -> dict[str, np.ndarray]:
    """A GGUF LoRA (q, k, v, o projections) as one slot of the stacked run-time parameters.

    The scale (`scale * alpha / rank`, as llama.cpp applies it) is folded into B; Q and K rows of
    B get the same reordering as the base rows.
    """
    reader = GGUFReader(str(path))
    alpha_field = reader.fields.get("adapter.lora.alpha")
    if alpha_field is None:
        raise EngineError(f"adapter {path}: adapter.lora.alpha is missing (not a GGUF LoRA)")
    alpha = float(alpha_field.parts[alpha_field.data[0]][0])
    pairs: dict[str, dict[str, np.ndarray]] = {}
    for t in reader.tensors:
        base, _, which = t.name.rpartition(".")
        pairs.setdefault(base, {})[which] = np.asarray(t.data, dtype=np.float32)
    d, r = shape.head_dim, LORA_RANK
    rows = {"attn_q": shape.heads * d, "attn_k": shape.kv_heads * d, "attn_v": shape.kv_heads * d}
    out: dict[str, np.ndarray] = {}
    for i in range(shape.layers):
        qkv_a = np.zeros((3 * r, shape.hidden), np.float32)
        qkv_b = np.zeros((sum(rows.values()), 3 * r), np.float32)
        o_a, o_b = np.zeros((r, shape.hidden), np.float32), np.zeros((shape.hidden, r), np.float32)
        offset = 0
        for k, name in enumerate(("attn_q", "attn_k", "attn_v", "attn_output")):
            ab = pairs.pop(f"blk.{i}.{name}.weight", None)
            n_out = rows.get(name, shape.hidden)
            if ab is None:
                offset += n_out
                continue
            a, b = ab["lora_a"], ab["lora_b"]
            rank = a.shape[0]
            if rank > r or b.shape != (n_out, rank) or a.shape[1] != shape.hidden:
                raise EngineError(f"adapter {path}: blk.{i}.{name}: A {a.shape} B {b.shape} do not fit (rank <= {r})")
            b = b * (scale * alpha / rank)
            if name in ("attn_q", "attn_k") and shape.interleaved_rope:
                b = b[_halves_order(n_out, shape.heads if name == "attn_q" else shape.kv_heads)]
            if name == "attn_output":
                o_a[:rank], o_b[:, :rank] = a, b
            else:
                qkv_a[k * r : k * r + rank] = a
                qkv_b[offset : offset + n_out, k * r : k * r + rank] = b
                offset += n_out
        out[f"layers.{i}.qkv.lora_a"], out[f"layers.{i}.qkv.lora_b"] = qkv_a, qkv_b
        out[f"layers.{i}.o.lora_a"], out[f"layers.{i}.o.lora_b"] = o_a, o_b
    if pairs:
        raise EngineError(
            f"adapter {path}: the TVM backend applies LoRA to q, k, v and o only; it also targets "
            + ", ".join(sorted(pairs)[:3])
        )
    return out
