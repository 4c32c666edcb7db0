"""Training one skill's adapter end to end: peft LoRA, GGUF conversion, and a parity check that the
runtime computes what peft trained."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel

from assistant.engine.lora import AdapterManifest
from assistant.modelstore.gguf_header import read_keys
from assistant.training.convert import convert_peft
from assistant.training.recipe import AdapterProject, Example
from assistant.training.train import TrainResult


class TrainReport(BaseModel):
    train: TrainResult
    manifest: AdapterManifest
    gguf: str
    parity: list[tuple[str, str, str]]  # (prompt, peft greedy, runtime greedy)

    @property
    def parity_ok(self) -> bool:
        """Most prompts identical: the runtime's 4-bit matmuls may flip a near-tie that fp32 peft does not."""
        return sum(a == b for _, a, b in self.parity) * 2 > len(self.parity)


def train_skill(
    skill: AdapterProject,
    base_gguf: Path,
    base_sha256: str,
    *,
    threads: int,
    examples: list[Example] | None = None,
    on_step: Callable[[int, int, float], None] | None = None,
    parity_prompts: int = 3,
) -> TrainReport:
    """Train, save the peft adapter (safetensors), convert it to GGUF + manifest, check parity."""
    from assistant.engine.llama_cpp import LlamaCppEngine
    from assistant.training.train import greedy, load_base, train

    model, tok = load_base(base_gguf, threads)
    n_head, n_head_kv = model.config.num_attention_heads, model.config.num_key_value_heads
    architecture = str(read_keys(base_gguf, {"general.architecture"})["general.architecture"])
    peft_model, result = train(model, tok, examples or skill.train_examples(), skill.recipe, on_step=on_step)
    peft_dir = skill.dir / "peft"
    if peft_dir.exists():
        shutil.rmtree(peft_dir)
    peft_model.save_pretrained(str(peft_dir), safe_serialization=True)
    manifest = convert_peft(
        peft_dir, skill.adapter_path, name=skill.name, base_model=skill.recipe.base_model,
        base_sha256=base_sha256, n_head=n_head, n_head_kv=n_head_kv, architecture=architecture,
        recipe_sha256=skill.recipe_sha256,
        description=f"LoRA for the {skill.name} skill, trained by `assistant adapters train {skill.name}`",
    )  # fmt: skip
    # The runtime must compute what peft trained: same greedy answer on a few held-out prompts.
    engine = LlamaCppEngine(base_gguf, name=skill.recipe.base_model, base_sha256=base_sha256, threads=threads)
    try:
        engine.load_adapter("trained", skill.adapter_path)
        parity = []
        for ex in skill.heldout_examples()[:parity_prompts]:
            runtime = engine.generate(ex.messages, max_tokens=48, adapter="trained").result().strip()
            parity.append((ex.messages[-1].content, greedy(peft_model, tok, ex).strip(), runtime))
    finally:
        engine.close()
    return TrainReport(train=result, manifest=manifest, gguf=str(skill.adapter_path), parity=parity)
