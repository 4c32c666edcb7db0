"""Token choice from logits, shared by every backend (and later by speculative verification)."""

from __future__ import annotations

import numpy as np

from assistant.engine.types import Sampling


def probabilities(logits: np.ndarray, sampling: Sampling) -> np.ndarray:
    """The distribution the sampler draws from: temperature, then top-k, then top-p, renormalised."""
    x = logits.astype(np.float64) / max(sampling.temperature, 1e-6)
    n = x.shape[0]
    if 0 < sampling.top_k < n:
        kth = np.partition(x, n - sampling.top_k)[n - sampling.top_k]
        x = np.where(x >= kth, x, -np.inf)
    x -= x.max()
    p = np.exp(x)
    p /= p.sum()
    if sampling.top_p < 1.0:
        order = np.argsort(-p, kind="stable")
        cum = np.cumsum(p[order])
        # keep the smallest prefix whose mass reaches top_p (always at least one token)
        cut = int(np.searchsorted(cum, sampling.top_p, side="left")) + 1
        mask = np.zeros_like(p, dtype=bool)
        mask[order[:cut]] = True
        p = np.where(mask, p, 0.0)
        p /= p.sum()
    return p


def sample_token(logits: np.ndarray, sampling: Sampling, rng: np.random.Generator) -> int:
    if sampling.greedy:
        return int(np.argmax(logits))
    p = probabilities(logits, sampling)
    return int(rng.choice(p.shape[0], p=p))


def speculative_accept(
    drafts: list[int],
    q: list[np.ndarray],
    p: list[np.ndarray],
    rng: np.random.Generator,
) -> tuple[int, int]:
    """Standard speculative rejection sampling (Leviathan et al. 2023; Chen et al. 2023).

    `drafts[i]` was sampled from the draft distribution `q[i]`; `p[i]` is the target's
    distribution at the same position and `p[len(drafts)]` the one after the last draft.
    Accept draft i with probability min(1, p/q); on the first rejection sample from the
    normalised residual max(0, p - q). If all are accepted, sample a bonus token from the
    last row. The tokens returned are distributed exactly as sampling from the target.
    Returns (number of drafts accepted, the next token).
    """
    for i, x in enumerate(drafts):
        px, qx = float(p[i][x]), float(q[i][x])
        if qx > 0 and rng.random() * qx < px:  # u < p/q without dividing
            continue
        residual = np.maximum(p[i] - q[i], 0.0)
        total = residual.sum()
        dist = residual / total if total > 0 else p[i]
        return i, int(rng.choice(dist.shape[0], p=dist))
    last = p[len(drafts)]
    return len(drafts), int(rng.choice(last.shape[0], p=last))
