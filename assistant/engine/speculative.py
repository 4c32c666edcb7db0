"""Speculative decoding: a small draft model on CPU threads of its own, verified by the target.

Per step the draft proposes k tokens; the target evaluates [last, d1..dk] in one batch;
the longest valid prefix is kept and both KV caches are rolled back to it. Greedy requests
accept a draft only if it is the target's argmax, so the output is the target's own greedy
output; sampled requests use rejection sampling, which preserves the target's distribution.

The draft never applies the request's LoRA adapter: adapters are trained for the base
model's weights and do not fit the draft's. An adapter shifts the target away from the
draft, which lowers acceptance (bench.engine measures it both ways); the adaptive k then
drafts less, or stops speculating, for that adapter.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from assistant.engine.costmodel import Calibration, CostModel, calibrate
from assistant.engine.local import LocalEngine, Request, TextGeneration, common_prefix
from assistant.engine.sampling import probabilities, sample_token, speculative_accept
from assistant.engine.types import ChatMessage, EngineError, Sampling

_VOCAB_SAMPLE = 2000
log = logging.getLogger("assistant.engine.speculative")


def batch_invariant(engine: LocalEngine, context: list[int], n: int) -> bool:
    """Do n tokens verified in one batch get bit-identical logits to decoding them one by one?

    Lossless greedy speculation depends on it. llama.cpp's kernels may pick other code paths
    (and rounding) by batch size; scripts/install.sh builds without the one that does here.
    """
    base = len(context) - n
    engine.prefill(context[:base])
    single = []
    for i in range(n):
        engine._decode([context[base + i]], base + i)
        single.append(engine.logits().copy())
    engine.truncate(base)
    engine._decode(context[base:], base, all_logits=True)
    same = all(np.array_equal(single[i], engine.logits(i)) for i in range(n))
    engine.truncate(base)
    return same


def check_vocabularies(target: LocalEngine, draft: LocalEngine) -> None:
    """Token ids must mean the same text in both models; otherwise drafts are meaningless."""
    if draft.n_vocab > target.n_vocab or target.n_vocab - draft.n_vocab > 256:
        raise EngineError(
            f"draft '{draft.model_name}' ({draft.n_vocab} tokens) and target '{target.model_name}' "
            f"({target.n_vocab} tokens) do not share a vocabulary; pick a draft of the target's family"
        )
    rng = np.random.default_rng(0)
    ids = sorted(set(range(min(256, draft.n_vocab))) | set(rng.integers(0, draft.n_vocab, _VOCAB_SAMPLE).tolist()))
    for i in ids:
        a, b = draft.token_text(i), target.token_text(i)
        if a != b:
            raise EngineError(
                f"draft '{draft.model_name}' and target '{target.model_name}' have different vocabularies: "
                f"token {i} is {a!r} in the draft but {b!r} in the target"
            )


@dataclass
class SpecStats:
    """Running statistics over all requests (and per adapter, for the adaptive k)."""

    steps: int = 0
    drafted: int = 0
    accepted: int = 0
    rejected: int = 0  # steps that ended in a rejection (drafts after it were never tested)
    k_used: dict[int, int] = field(default_factory=dict)

    @property
    def acceptance(self) -> float:
        """Per-token acceptance probability: tested drafts that passed (accepted / drafted would
        count untested drafts after a rejection as failures and understate it)."""
        tested = self.accepted + self.rejected
        return self.accepted / tested if tested else 0.0

    @property
    def accepted_per_drafted(self) -> float:
        return self.accepted / self.drafted if self.drafted else 0.0


class SpeculativeEngine:
    """A target engine with a CPU draft; callers see the same Engine protocol."""

    def __init__(
        self,
        target: LocalEngine,
        draft: LocalEngine,
        *,
        max_draft: int = 8,
        fixed_k: int | None = None,
        cost: CostModel | None = None,
        prior_acceptance: float = 0.7,
        smoothing: float = 0.1,
    ):
        check_vocabularies(target, draft)
        self.target = target
        self.draft = draft
        self.max_draft = max_draft
        self.fixed_k = fixed_k
        self._cost = cost
        self._prior = prior_acceptance
        self._smoothing = smoothing
        self._alpha: dict[str | None, float] = {}
        self.stats = SpecStats()
        self.batch_invariant: bool | None = None  # measured by calibrate()
        self.by_adapter: dict[str | None, SpecStats] = {}
        self._draft_threads = draft.threads  # as configured; set_threads lowers them, never raises

    # --- the Engine protocol, delegated to the target -------------------------

    @property
    def model_name(self) -> str:
        return f"{self.target.model_name} (draft {self.draft.model_name})"

    @property
    def base_model(self) -> str:
        return self.target.base_model

    def tokenize(self, text: str, *, special: bool = False) -> list[int]:
        return self.target.tokenize(text, special=special)

    def detokenize(self, tokens: Sequence[int]) -> str:
        return self.target.detokenize(tokens)

    def apply_chat_template(self, messages: Sequence[ChatMessage], *, add_generation_prompt: bool = True) -> str:
        return self.target.apply_chat_template(messages, add_generation_prompt=add_generation_prompt)

    @property
    def adapters(self) -> list[str]:
        return self.target.adapters

    @property
    def context_size(self) -> int:
        return self.target.context_size

    def set_threads(self, threads: int, threads_batch: int) -> None:
        """Both models yield: the target takes the given counts, the draft at most its configured ones
        and at most these (the draft runs beside the target on the same cores)."""
        self.target.set_threads(threads, threads_batch)
        draft, draft_batch = self._draft_threads
        self.draft.set_threads(min(draft, threads), min(draft_batch, threads_batch))

    def reset(self) -> None:
        self.target.reset()
        self.draft.reset()

    def close(self) -> None:
        self.target.close()
        self.draft.close()

    def generate(
        self,
        prompt: str | Sequence[ChatMessage],
        *,
        max_tokens: int = 128,
        sampling: Sampling | None = None,
        stop: Sequence[str] = (),
        cancel: threading.Event | None = None,
        adapter: str | None = None,
        grammar: str | None = None,
        reply_start: str = "",
    ) -> TextGeneration:
        return self.target._start(
            prompt, max_tokens, sampling, stop, cancel, adapter, self._tokens, grammar, reply_start
        )

    # --- cost model and draft length ------------------------------------------

    def calibrate(self, saved: Path | None = None, max_age_s: float = 7 * 86400) -> CostModel:
        """Measure this machine's draft and verify costs (1 s for the 135M pair, 7 s for the standard one);
        done once, or read from `saved` (a file for this device and model pair) when it is recent."""
        kept = Calibration.load(saved, max_age_s) if saved is not None else None
        if kept is not None:
            self._cost, self.batch_invariant = kept.cost, kept.batch_invariant
        else:
            context = self.target.tokenize("The quick brown fox jumps over the lazy dog. " * 12, special=True)
            with self.target._lock, self.draft._lock:
                self._cost = calibrate(self.target, self.draft, self.max_draft, context=context)
                self.batch_invariant = batch_invariant(self.target, context, self.max_draft + 1)
            if saved is not None:
                Calibration(cost=self._cost, batch_invariant=self.batch_invariant, measured_at=time.time()).save(saved)
        if not self.batch_invariant:
            # Only worth a warning when speculation will run: with k = 0 the verify path is never taken.
            speculates = bool(self.fixed_k) or (
                self.fixed_k is None and self._cost.best_k(self._prior, self.max_draft)[0] > 0
            )
            log.log(
                logging.WARNING
                if speculates and (self.target.batch_variance is None or self.target.batch_variance_matters)
                else logging.INFO,
                "%s computes batches differently from single tokens: %s",
                self.target.model_name,
                self.target.batch_variance
                or "greedy speculative output can part from plain greedy where two tokens nearly tie (this "
                "CPU's kernels for this model's quantization round a batch differently from one token; "
                "Q4_0/Q4_1 models verify bit-identically with scripts/install.sh's build)",
            )
        return self._cost

    @property
    def cost(self) -> CostModel:
        return self._cost if self._cost is not None else self.calibrate()

    def acceptance(self, adapter: str | None = None) -> float:
        return self._alpha.get(adapter, self._prior)

    def choose_k(self, adapter: str | None) -> int:
        if self.fixed_k is not None:
            return self.fixed_k
        k, _ = self.cost.best_k(self.acceptance(adapter), self.max_draft)
        return k

    def _record(self, adapter: str | None, k: int, accepted: int) -> None:
        for s in (self.stats, self.by_adapter.setdefault(adapter, SpecStats())):
            s.steps += 1
            s.drafted += k
            s.accepted += accepted
            s.rejected += 1 if accepted < k else 0
            s.k_used[k] = s.k_used.get(k, 0) + 1
        if k == 0:
            return
        # Each step observes `accepted` successes and, unless all passed, one failure.
        observed = accepted / (accepted + (0 if accepted == k else 1))
        old = self._alpha.get(adapter, self._prior)
        weight = self._smoothing * (accepted + (0 if accepted == k else 1))
        self._alpha[adapter] = old + min(1.0, weight) * (observed - old)

    # --- the decoding loop ------------------------------------------------------

    def _draft_tokens(
        self, context: list[int], k: int, sampling: Sampling, rng: np.random.Generator
    ) -> tuple[list[int], list[np.ndarray]]:
        """Bring the draft's KV to `context` (reusing what matches) and propose k tokens."""
        d = self.draft
        n = min(common_prefix(d._cached, context), len(context) - 1)
        d.truncate(n)
        d._decode(context[n:], n)
        drafts: list[int] = []
        dists: list[np.ndarray] = []
        for i in range(k):
            logits = d.logits()
            if sampling.greedy:
                token = int(np.argmax(logits))
            else:
                q = probabilities(logits, sampling)
                token = int(rng.choice(q.shape[0], p=q))
                dists.append(q)
            drafts.append(token)
            if i < k - 1:
                d._decode([token], len(context) + i)
        return drafts, dists

    def _tokens(self, req: Request, rng: np.random.Generator) -> Generator[int, None, None]:
        t = self.target
        with self.draft._lock:
            pos = len(req.tokens)
            last = sample_token(t.logits(), req.sampling, rng)
            yield last
            draft_ready = False
            while True:
                room = t.context_size - pos - 1
                if room <= 0:
                    return
                k = min(self.choose_k(req.adapter), room - 1, t.batch_size - 1)
                if k <= 0:
                    t._decode([last], pos)
                    pos += 1
                    self._record(req.adapter, 0, 0)
                    last = sample_token(t.logits(), req.sampling, rng)
                    yield last
                    continue
                if not draft_ready:
                    # The draft catches up on the prompt only at its first speculative step: never
                    # before the first token, and never when the cost model keeps k at 0. Its own
                    # prefix slots keep each skill's system prompt evaluated.
                    self.draft.prefill(req.tokens, cache_prefix=req.cache_prefix)
                    draft_ready = True
                history = t._cached[:pos] + [last]
                drafts, q = self._draft_tokens(history, k, req.sampling, rng)
                t._decode([last, *drafts], pos, all_logits=True)
                if req.sampling.greedy:
                    accepted = 0
                    while accepted < k and int(np.argmax(t.logits(accepted))) == drafts[accepted]:
                        accepted += 1
                    following = int(np.argmax(t.logits(accepted)))
                else:
                    p = [probabilities(t.logits(i), req.sampling) for i in range(k + 1)]
                    accepted, following = speculative_accept(drafts, q, p, rng)
                t.truncate(pos + 1 + accepted)  # keep `last` and the accepted drafts
                self._record(req.adapter, k, accepted)
                yield from drafts[:accepted]
                yield following
                pos += 1 + accepted
                last = following
