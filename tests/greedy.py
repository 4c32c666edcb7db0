"""Greedy token comparisons that hold on any CPU.

Two runs that round differently (another runtime, a verify batch, other kernels) may pick
different tokens where the model's top two candidates are nearly tied, and from there the texts
part for good. Such a parting is accepted only at a near-tie, and reported; anywhere else it is a
failure, so a broken kernel, cache or adapter still fails.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence

import numpy as np

# Margins in logits. Across runtimes (TVM's float kernels vs llama.cpp's int8-activation dot
# products) logits differ by up to ~0.1 on the default model; a verify batch of the same runtime
# differs from one-token decodes by < 1e-4 (tested in test_speculative).
CROSS_RUNTIME_TIE = 0.25
SAME_RUNTIME_TIE = 1e-3


class NearTie(UserWarning):
    """Two greedy runs parted where the reference's best and the other's choice were within the margin."""


def assert_same_greedy(
    ours: Sequence[int],
    reference: Sequence[int],
    logits_after: Callable[[list[int]], np.ndarray],
    *,
    margin: float,
    what: str = "greedy",
) -> None:
    """`ours` equals `reference`, or parts from it only where the reference rated our token within
    `margin` of its best (`logits_after(prefix)`: the reference's logits after `prefix` of its tokens)."""
    ours, reference = list(ours), list(reference)
    i = next((k for k, (a, b) in enumerate(zip(ours, reference, strict=False)) if a != b), None)
    if i is None:
        assert len(ours) == len(reference), f"{what}: one run stopped early: {ours} vs {reference}"
        return
    logits = np.asarray(logits_after(reference[:i]), dtype=np.float64)
    best = int(np.argmax(logits))
    assert best == reference[i], f"{what}: logits_after does not reproduce the reference at token {i}"
    gap = float(logits[best] - logits[ours[i]])
    assert gap < margin, (
        f"{what}: parted at token {i} ({ours[i]} vs {reference[i]}), not at a near-tie: "
        f"the reference rates our token {gap:.4f} below its best (margin {margin})"
    )
    warnings.warn(NearTie(f"{what}: parted at token {i} at a near-tie (gap {gap:.5f} < {margin})"), stacklevel=2)


def sequential_logits(
    engine: object, prompt: Sequence[int], adapter: str | None = None
) -> Callable[[list[int]], np.ndarray]:
    """`logits_after` for an engine whose batches round differently from one-token decodes: the prompt
    as one batch, then each token of the prefix decoded alone, as plain generation does."""

    def after(prefix: list[int]) -> np.ndarray:
        engine.reset()  # type: ignore[attr-defined]
        engine.prefill(list(prompt), adapter=adapter)  # type: ignore[attr-defined]
        for i, token in enumerate(prefix):
            engine._decode([token], len(prompt) + i)  # type: ignore[attr-defined]
        return np.array(engine.logits())  # type: ignore[attr-defined]

    return after


def engine_logits(
    engine: object, prompt: Sequence[int], adapter: str | None = None
) -> Callable[[list[int]], np.ndarray]:
    """`logits_after` for a LocalEngine: its logits after the prompt and a prefix of its own tokens."""

    def after(prefix: list[int]) -> np.ndarray:
        engine.prefill([*prompt, *prefix], adapter=adapter)  # type: ignore[attr-defined]
        return np.array(engine.logits())  # type: ignore[attr-defined]

    return after
