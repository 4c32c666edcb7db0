"""When does speculation pay, and with how many drafted tokens?

Per step the draft decodes k tokens and the target verifies k+1 in one batch. With a
per-token acceptance rate a, the expected tokens produced per step are
(1 - a^(k+1)) / (1 - a), so the predicted speedup over plain decoding is

    speedup(k) = E[tokens](a, k) * verify(1) / (k * draft + verify(k + 1)).

verify(n) is measured, not assumed linear: a memory-bound target (big model, GPU) verifies
n tokens for nearly the price of one, while a small CPU target pays almost n times
(FACTS.md: 5 tokens cost 3.5-4.4x one for Q4_1). The same numbers say whether a CPU/GPU
split pays: draft is the CPU's per-token cost, verify the GPU's.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from pydantic import BaseModel, Field

if TYPE_CHECKING:
    from assistant.engine.local import LocalEngine


class CostModel(BaseModel):
    draft_s: float = Field(gt=0, description="One draft decode step (seconds).")
    verify_s: list[float] = Field(min_length=2, description="verify_s[n-1]: target batch of n tokens (seconds).")
    verify_measured_s: list[float] = Field([], description="The raw medians the linear fit was made from.")

    @classmethod
    def fitted(cls, draft_s: float, measured: Sequence[float]) -> CostModel:
        """Smooth noisy per-size timings with verify(n) = a + b*n (a weight-read cost plus a per-token cost)."""
        n = np.arange(1, len(measured) + 1, dtype=np.float64)
        b, a = np.polyfit(n, np.asarray(measured, dtype=np.float64), 1)
        b = max(float(b), 0.0)
        a = max(float(np.mean(measured) - b * n.mean()), 1e-6)
        return cls(draft_s=draft_s, verify_s=[a + b * k for k in n], verify_measured_s=list(measured))

    @property
    def max_draft(self) -> int:
        return len(self.verify_s) - 1

    @staticmethod
    def expected_tokens(alpha: float, k: int) -> float:
        if k == 0:
            return 1.0
        if alpha >= 1.0:
            return float(k + 1)
        return (1 - alpha ** (k + 1)) / (1 - alpha)

    def step_s(self, k: int) -> float:
        return k * self.draft_s + self.verify_s[k]

    def speedup(self, alpha: float, k: int) -> float:
        return self.expected_tokens(alpha, k) * self.verify_s[0] / self.step_s(k)

    def best_k(self, alpha: float, max_draft: int | None = None, margin: float = 1.05) -> tuple[int, float]:
        """(k, predicted speedup); k = 0 means plain decoding is predicted to be faster."""
        limit = min(max_draft or self.max_draft, self.max_draft)
        k, best = max(((k, self.speedup(alpha, k)) for k in range(1, limit + 1)), key=lambda kv: kv[1])
        return (k, best) if best >= margin else (0, 1.0)

    def table(self, alpha: float) -> dict[int, float]:
        return {k: round(self.speedup(alpha, k), 3) for k in range(0, self.max_draft + 1)}


class Calibration(BaseModel):
    """What `SpeculativeEngine.calibrate` measured for one device and model pair, kept between starts
    (measuring the standard profile's pair takes about 7 s on 2 cores)."""

    cost: CostModel
    batch_invariant: bool
    measured_at: float = Field(description="time.time() of the measurement.")

    @classmethod
    def load(cls, path: Path, max_age_s: float) -> Calibration | None:
        """The saved calibration, unless missing, unreadable or older than `max_age_s` (machines drift)."""
        try:
            saved = cls.model_validate_json(path.read_text())
        except (OSError, ValueError):
            return None
        return saved if time.time() - saved.measured_at <= max_age_s else None

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".part")
        tmp.write_text(self.model_dump_json())
        tmp.replace(path)


def _median_s(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def calibrate(
    target: LocalEngine, draft: LocalEngine, max_draft: int, *, context: Sequence[int], repeats: int = 5
) -> CostModel:
    """Measure draft per-token cost and target verify cost for 1..max_draft+1 tokens.

    Runs on the engines' working sequences after `context` and rolls them back, so the
    caches stay usable.
    """
    base = len(context)
    probe = list(context[-1:]) * (max_draft + 1)

    def draft_step() -> None:
        draft._decode(probe[:1], base)
        int(draft.logits().argmax())
        draft.truncate(base)

    def verify(n: int) -> float:
        def run() -> None:
            target._decode(probe[:n], base, all_logits=True)
            for i in range(n):
                int(target.logits(i).argmax())
            target.truncate(base)

        return _median_s(run, repeats)

    target.prefill(list(context))
    draft.prefill(list(context))
    _median_s(draft_step, 2)  # warm up both
    verify(1)
    measured = [verify(n) for n in range(1, max_draft + 2)]
    return CostModel.fitted(_median_s(draft_step, repeats), measured)
