"""The adapter toolchain: datasets, peft training (tiny random model), conversion to GGUF LoRA
(checked against peft on the real base), and evaluation on the runtime engine."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from assistant.engine import EngineError
from assistant.engine.llama_cpp import LlamaCppEngine
from assistant.engine.lora import AdapterError, read_adapter_manifest
from assistant.training import AdapterProject, Recipe, convert_peft, evaluate, gguf_pairs, rope_permute
from tests.conftest import DEFAULT_MODEL

torch = pytest.importorskip("torch", reason="the train extra (scripts/test.sh installs it)")
pytest.importorskip("peft")


@pytest.fixture(scope="module")
def tokenizer(default_model_path: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(default_model_path.parent), gguf_file=default_model_path.name)


# --- data and recipes -------------------------------------------------------------------------------


def test_home_dataset_keeps_held_out_phrasings_out_of_training() -> None:
    skill = AdapterProject("home")
    train, held = skill.train_examples(200), skill.heldout_examples()
    assert len(train) == 200 and len(held) >= 30
    assert not {e.messages[-1].content for e in train} & {e.messages[-1].content for e in held}
    ex = held[0]
    assert skill.score(ex, ex.target) == 1.0
    assert skill.score(ex, ex.target.replace("turn_on", "turn_off")) == 0.0
    assert skill.score(ex, "not json") == 0.0
    assert skill.grammar is not None


def test_a_leaking_generator_and_a_bad_recipe_are_refused(tmp_path: Path) -> None:
    src = AdapterProject("home").dir
    shutil.copytree(src, tmp_path / "home", ignore=shutil.ignore_patterns("peft", "*.gguf", "eval.json"))
    dataset = tmp_path / "home" / "dataset.py"
    dataset.write_text(dataset.read_text().replace("if utterance_key(example) not in held:", "if True:"))
    with pytest.raises(AdapterError, match="held-out examples are in the training set"):
        AdapterProject("home", tmp_path).train_examples(480)
    recipe = tmp_path / "home" / "recipe.toml"
    recipe.write_text(recipe.read_text().replace("rank = 16", "rank = -1"))
    with pytest.raises(AdapterError, match="recipe.toml: rank"):
        AdapterProject("home", tmp_path)
    with pytest.raises(AdapterError, match="no training recipe for skill 'nope'"):
        AdapterProject("nope", tmp_path)


# --- training (tiny random model, shortened) ---------------------------------------------------------


def _tiny_llama(vocab: int) -> Any:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True)  # fmt: skip
    return LlamaForCausalLM(cfg)


def test_training_lowers_the_loss_and_saves_safetensors_only(tokenizer: Any, tmp_path: Path, base_sha: str) -> None:
    from assistant.training.train import train

    skill = AdapterProject("home")
    recipe = Recipe(**{**skill.recipe.model_dump(), "epochs": 6, "batch_size": 4, "learning_rate": 5e-2})
    model, result = train(_tiny_llama(len(tokenizer)), tokenizer, skill.train_examples(8), recipe)
    assert result.steps == 12 and result.examples == 8
    # A random tiny model starts at uniform (ln 49152 = 10.8) and an attention-only LoRA cannot go far
    # below it in 12 steps; a loop that does not learn (masking, optimizer, schedule) stays at 10.8.
    assert result.final_loss < result.first_loss - 0.15
    model.save_pretrained(str(tmp_path / "peft"), safe_serialization=True)
    files = {p.name for p in (tmp_path / "peft").iterdir()}
    assert "adapter_model.safetensors" in files and not any(f.endswith((".bin", ".pt")) for f in files)
    manifest = convert_peft(tmp_path / "peft", tmp_path / "tiny.gguf", name="tiny", base_model="tiny",
                            base_sha256=base_sha, n_head=4, n_head_kv=2, recipe_sha256=skill.recipe_sha256)  # fmt: skip
    assert manifest.rank == 16 and manifest.alpha == 32 and manifest.recipe_sha256 == skill.recipe_sha256
    assert manifest.target_modules == ["k_proj", "o_proj", "q_proj", "v_proj"]
    assert read_adapter_manifest(tmp_path / "tiny.gguf") == manifest
    from gguf import GGUFReader

    names = {t.name for t in GGUFReader(str(tmp_path / "tiny.gguf")).tensors}
    assert names == {f"blk.{i}.attn_{m}.weight.lora_{ab}" for i in (0, 1) for m in ("q", "k", "v", "output")
                     for ab in ("a", "b")}  # fmt: skip


def test_training_the_last_layers_packs_the_shared_prompt_and_computes_the_models_own_loss(
    tokenizer: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`train_layers`: LoRA on the last layers only, batches packed behind one shared prompt (checked
    against the model's own forward before training; a wrong layout is refused, not trained on)."""
    from assistant.training.train import PackedBatches, train

    skill = AdapterProject("home")
    recipe = Recipe(**{**skill.recipe.model_dump(), "epochs": 6, "batch_size": 4, "learning_rate": 5e-2,
                       "train_layers": 1})  # fmt: skip
    examples = skill.train_examples(8)
    model, result = train(_tiny_llama(len(tokenizer)), tokenizer, examples, recipe)
    assert result.steps == 12 and result.final_loss < result.first_loss - 0.15
    trained = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trained and all(".layers.1." in n for n in trained)  # layer 0 stays frozen

    plain = PackedBatches._layout

    def unmasked(self: PackedBatches, batch: list[int]) -> tuple[Any, Any]:
        pos, mask = plain(self, batch)  # examples packed together see each other: not what was trained on
        return pos, torch.ones_like(mask).tril()

    monkeypatch.setattr(PackedBatches, "_layout", unmasked)
    with pytest.raises(AdapterError, match="packed training computes losses up to"):
        train(_tiny_llama(len(tokenizer)), tokenizer, examples, recipe)


def test_qwen2_lora_rows_are_not_permuted() -> None:
    """Qwen2 GGUF files keep HF's Q/K row order (NeoX RoPE); only Llama's are permuted."""
    rows = np.arange(24, dtype=np.float32).reshape(8, 3)
    tensors = {"model.layers.0.self_attn.q_proj.lora_A.weight": np.ones((3, 4), np.float32),
               "model.layers.0.self_attn.q_proj.lora_B.weight": rows}  # fmt: skip
    qwen = gguf_pairs(tensors, n_head=2, n_head_kv=2, architecture="qwen2")["blk.0.attn_q.weight"][1]
    llama = gguf_pairs(tensors, n_head=2, n_head_kv=2, architecture="llama")["blk.0.attn_q.weight"][1]
    assert (qwen == rows).all() and not (llama == rows).all()


def test_rope_permutation_is_a_row_permutation_per_head() -> None:
    rows = np.arange(8 * 3).reshape(8, 3).astype(np.float32)  # 2 heads of 4 rows
    out = rope_permute(rows, 2)
    assert sorted(out[:, 0].tolist()) == rows[:, 0].tolist()  # nothing lost or mixed across columns
    assert out[:4, 0].tolist() == [0, 6, 3, 9]  # head 0: halves interleaved (0,2 | 1,3 rows of 3 values)
    with pytest.raises(AdapterError, match="not a LoRA A/B"):
        gguf_pairs({"model.embed_tokens.weight": rows}, n_head=2, n_head_kv=2)


def test_peft_directory_without_safetensors_is_refused(tmp_path: Path, base_sha: str) -> None:
    (tmp_path / "adapter_config.json").write_text(json.dumps({"r": 4, "lora_alpha": 8}))
    (tmp_path / "adapter_model.bin").write_bytes(b"pickle")
    with pytest.raises(AdapterError, match="adapter_model.safetensors is missing"):
        convert_peft(tmp_path, tmp_path / "x.gguf", name="x", base_model="b", base_sha256=base_sha, n_head=9,
                     n_head_kv=3)  # fmt: skip


# --- conversion on the real base ---------------------------------------------------------------------


def test_converted_adapter_computes_what_peft_computes_on_the_real_base(
    default_model_path: Path, base_sha: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A random (strong) LoRA on the dequantized real base in peft vs the GGUF LoRA in llama.cpp."""
    from peft import LoraConfig, get_peft_model

    from assistant.training.train import load_base

    model, tok = load_base(default_model_path, threads=2)
    torch.manual_seed(3)
    lora = LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "down_proj"],
                      init_lora_weights=False, lora_dropout=0.0)  # fmt: skip
    peft_model = get_peft_model(model, lora).eval()
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.mul_(2.0)
    peft_model.save_pretrained(str(tmp_path / "peft"), safe_serialization=True)
    heads = dict(n_head=model.config.num_attention_heads, n_head_kv=model.config.num_key_value_heads)
    convert_peft(tmp_path / "peft", tmp_path / "a.gguf", name="a", base_model=DEFAULT_MODEL, base_sha256=base_sha,
                 **heads)  # fmt: skip
    # Negative control: the same adapter without the Q/K row permutation.
    monkeypatch.setattr("assistant.training.convert.rope_permute", lambda rows, n_head: rows)
    convert_peft(tmp_path / "peft", tmp_path / "plain.gguf", name="plain", base_model=DEFAULT_MODEL,
                 base_sha256=base_sha, **heads)  # fmt: skip
    monkeypatch.undo()
    prompt = "<|im_start|>user\nName three colours.<|im_end|>\n<|im_start|>assistant\n"
    ids = tok(prompt, add_special_tokens=False).input_ids
    with torch.no_grad():
        ref = peft_model(torch.tensor([ids])).logits[0, -1].numpy()
        with peft_model.disable_adapter():
            base_ref = peft_model(torch.tensor([ids])).logits[0, -1].numpy()
    engine = LlamaCppEngine(default_model_path, name=DEFAULT_MODEL, context_size=512, base_sha256=base_sha)
    try:
        assert engine.tokenize(prompt, special=True) == ids
        engine.prefill(ids)
        base = np.array(engine.logits())  # a copy: the engine's buffer is reused
        engine.load_adapter("a", tmp_path / "a.gguf")
        engine.prefill(ids, adapter="a")
        got = np.array(engine.logits())
        engine.load_adapter("plain", tmp_path / "plain.gguf")
        engine.prefill(ids, adapter="plain")
        unpermuted = np.array(engine.logits())
    finally:
        engine.close()
    corr = lambda x, y: float(np.corrcoef(x, y)[0, 1])  # noqa: E731
    assert corr(ref, base_ref) < 0.97  # the adapter really changes the output
    assert corr(ref, got) > 0.99  # the runtime computes what peft computes
    assert corr(ref - base_ref, got - base) > 0.9  # change for change, not just the shared base
    assert int(np.argmax(got)) == int(np.argmax(ref))
    assert corr(ref - base_ref, unpermuted - base) < corr(ref - base_ref, got - base) - 0.05


# --- evaluation on the runtime -------------------------------------------------------------------------


def test_eval_compares_base_and_adapter_on_held_out_cases(
    default_model_path: Path, base_sha: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    skill = AdapterProject("home")
    if not skill.adapter_path.is_file():
        pytest.fail(f"the shipped adapter {skill.adapter_path} is missing")
    held = skill.heldout_examples()[:4]
    monkeypatch.setattr(skill, "heldout_examples", lambda: held)
    engine = LlamaCppEngine(default_model_path, name=DEFAULT_MODEL, context_size=1024, base_sha256=base_sha)
    try:
        report = evaluate(skill, engine, skill.adapter_path)
    finally:
        engine.close()
    assert report.cases == 4 and 0 <= report.base_metric <= 1 and 0 <= report.adapter_metric <= 1
    for r in report.results:
        json.loads(r.adapter)  # the grammar holds: always parseable JSON
    assert "| 4 |" in report.table()


def test_adapter_for_another_base_is_refused_before_eval(default_model_path: Path) -> None:
    skill = AdapterProject("home")
    engine = LlamaCppEngine(default_model_path, name=DEFAULT_MODEL, context_size=512, base_sha256="0" * 64)
    try:
        with pytest.raises(EngineError, match="was built for base"):
            evaluate(skill, engine, skill.adapter_path)
    finally:
        engine.close()


def test_cli_names_a_skill_without_a_recipe() -> None:
    from typer.testing import CliRunner

    from assistant.cli import app

    result = CliRunner().invoke(app, ["adapters", "eval", "nope"])
    assert result.exit_code == 2 and "no training recipe for skill 'nope'" in result.output
