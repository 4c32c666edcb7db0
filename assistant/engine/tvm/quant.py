"""GGUF Q4_1 weights as the compiled kernels take them.

A Q4_1 block holds 32 weights: float16 scale `d`, float16 minimum `m`, and 16 bytes of 4-bit codes
(element j < 16 in the low nibble of byte j, element j >= 16 in the high nibble of byte j - 16);
weight = code * d + m. The blocks are split into three arrays (codes, scales, minimums) so a
kernel reads each with a plain index: the same bytes, never widened to floats.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType

from assistant.engine.types import EngineError

BLOCK = 32
_BLOCK_BYTES = 20


@dataclass(frozen=True)
class Q4_1Weight:
    """A (out_features, in_features) matrix: codes (out, in/32, 16) uint8, scales and mins (out, in/32) float16."""

    codes: np.ndarray
    scales: np.ndarray
    mins: np.ndarray

    @property
    def shape(self) -> tuple[int, int]:
        return self.codes.shape[0], self.codes.shape[1] * BLOCK

    @classmethod
    def from_blocks(cls, raw: np.ndarray) -> Q4_1Weight:
        """`raw`: the tensor's bytes as GGUF stores them, (out_features, in_features / 32 * 20) uint8."""
        if raw.dtype != np.uint8 or raw.ndim != 2 or raw.shape[1] % _BLOCK_BYTES:
            raise EngineError(f"not Q4_1 block data: {raw.dtype} {raw.shape}")
        blocks = raw.reshape(raw.shape[0], -1, _BLOCK_BYTES)
        scales = np.ascontiguousarray(blocks[:, :, 0:2]).view(np.float16)[..., 0]
        mins = np.ascontiguousarray(blocks[:, :, 2:4]).view(np.float16)[..., 0]
        return cls(np.ascontiguousarray(blocks[:, :, 4:]), scales, mins)

    def dequantize(self) -> np.ndarray:
        """float32 reference (tests and debugging only: the kernels never materialize this)."""
        codes = np.concatenate([self.codes & 0xF, self.codes >> 4], axis=-1).astype(np.float32)
        w = codes * self.scales[..., None].astype(np.float32) + self.mins[..., None].astype(np.float32)
        return w.reshape(self.shape)


def read_q4_1(gguf_path: Path, names: list[str] | None = None) -> dict[str, Q4_1Weight]:
    """The Q4_1 tensors of a GGUF file (all, or `names`); a named tensor of another type is an error."""
    from assistant.modelstore.gguf_header import read_layout

    try:
        layout = read_layout(gguf_path)
    except (OSError, ValueError) as exc:
        raise EngineError(f"{gguf_path}: cannot read GGUF: {exc}") from exc
    out: dict[str, Q4_1Weight] = {}
    for tensor in layout.tensors.values():
        if names is not None and tensor.name not in names:
            continue
        if tensor.type != GGMLQuantizationType.Q4_1:
            if names is not None:
                raise EngineError(f"{gguf_path}: tensor {tensor.name} is {tensor.type.name}, not Q4_1")
            continue
        out[tensor.name] = Q4_1Weight.from_blocks(layout.array(tensor.name))
    missing = sorted(set(names or ()) - set(out))
    if missing:
        raise EngineError(f"{gguf_path}: no tensor named {', '.join(missing)}")
    return out
