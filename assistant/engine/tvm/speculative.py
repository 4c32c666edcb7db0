"""Speculative decoding across devices: a draft on the CPU proposes, the compiled target verifies.

Tokens are ids, so the draft can be any backend with the target's vocabulary; here it is the
llama.cpp engine (CPU) and the target a `TvmLlama` (llvm here, a GPU build on a device). The
target checks k proposals in one `verify` pass and keeps the longest prefix it agrees with plus
its own next token, so the output is exactly the target's greedy output (lossless).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

import numpy as np
from pydantic import BaseModel

from assistant.engine.llama_cpp import LlamaCppEngine
from assistant.engine.tvm.runtime import TvmLlama


class SpeculationStats(BaseModel):
    rounds: int = 0
    proposed: int = 0
    accepted: int = 0

    @property
    def acceptance(self) -> float:
        return self.accepted / self.proposed if self.proposed else 0.0


def speculative_greedy(
    target: TvmLlama,
    draft: LlamaCppEngine,
    prompt: Sequence[int],
    max_tokens: int,
    *,
    k: int = 4,
    stop: Collection[int] = (),
    adapter: str | None = None,
) -> tuple[list[int], SpeculationStats]:
    """Target-greedy continuation of `prompt`, `k` draft tokens per target pass (the adapter is the target's)."""
    stats = SpeculationStats()
    target.reset()
    out = [int(np.argmax(target.prefill(prompt, adapter)))]  # target KV: prompt (out[-1] not yet fed)
    while len(out) < max_tokens and out[-1] not in stop:
        context = [*prompt, *out]
        proposals: list[int] = []
        for _ in range(min(k, max_tokens - len(out))):
            draft.prefill(context + proposals)
            proposals.append(int(np.argmax(np.array(draft.logits()))))
        rows = target.verify([out[-1], *proposals], adapter)  # row i: what follows position i
        accepted = 0
        while accepted < len(proposals) and int(np.argmax(rows[accepted])) == proposals[accepted]:
            accepted += 1
        out += proposals[:accepted] + [int(np.argmax(rows[accepted]))]
        target.rollback(len(proposals) - accepted)
        stats.rounds += 1
        stats.proposed += len(proposals)
        stats.accepted += accepted
        if any(t in stop for t in out[-accepted - 1 :]):
            out = out[: next(i for i, t in enumerate(out) if t in stop) + 1]
            break
    return out[:max_tokens], stats
