"""Training a skill's LoRA with peft on the same weights the engine runs.

The base is rebuilt in transformers from the engine's GGUF (dequantized: every weight is the value
llama.cpp computes with), so an adapter learns corrections for the model the device really runs.
The loss covers only the reply tokens; the prompt is the skill's own prompt, rendered by the chat
template stored in the GGUF. Needs the `train` extra (torch, transformers, peft).
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from assistant.engine.local import common_prefix
from assistant.engine.lora import AdapterError
from assistant.training.recipe import Example, Recipe


class TrainResult(BaseModel):
    examples: int
    skipped_too_long: int
    steps: int
    first_loss: float
    final_loss: float
    seconds: float


def _torch() -> Any:
    try:
        import peft  # noqa: F401
        import torch
        import transformers  # noqa: F401
    except ImportError as e:
        raise AdapterError("adapter training needs the train extra: pip install 'assistant[train]'") from e
    return torch


def load_base(gguf: Path, threads: int) -> tuple[Any, Any]:
    """(model, tokenizer) in float32 from the engine's GGUF file."""
    torch = _torch()
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    torch.set_num_threads(threads)
    hf_logging.disable_progress_bar()
    if not gguf.is_file():
        raise AdapterError(f"base model file {gguf} is missing")
    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    return model, tok


def render(tok: Any, example: Example) -> str:
    return str(
        tok.apply_chat_template(
            [m.model_dump(include={"role", "content"}) for m in example.messages],
            tokenize=False,
            add_generation_prompt=True,
        )
    )


def encode(tok: Any, example: Example, max_length: int) -> tuple[list[int], list[int]] | None:
    """Token ids and labels (-100 on the prompt), or None if the example is longer than `max_length`."""
    prompt = tok(render(tok, example), add_special_tokens=False).input_ids
    reply = tok(example.target + tok.eos_token, add_special_tokens=False).input_ids
    ids = prompt + reply
    if len(ids) > max_length:
        return None
    return ids, [-100] * len(prompt) + reply


def trained_layers(model: Any, recipe: Recipe) -> list[int]:
    """Indices of the layers that get LoRA (all, or the last `recipe.train_layers`)."""
    n = int(model.config.num_hidden_layers)
    return list(range(max(0, n - (recipe.train_layers or n)), n))


def attach_lora(model: Any, recipe: Recipe) -> Any:
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=recipe.rank, lora_alpha=recipe.alpha,  # type: ignore[arg-type]  # peft takes floats too
        lora_dropout=recipe.dropout, target_modules=list(recipe.target_modules), task_type="CAUSAL_LM",
        layers_to_transform=trained_layers(model, recipe) if recipe.train_layers else None,
    )  # fmt: skip
    return get_peft_model(model, config)


class PackedBatches:
    """Loss on the last layers only, with the prompt every example shares computed once per batch.

    A batch is one sequence: the shared prefix, then each example's rest at the positions it has in
    its own prompt, attending only to the prefix and to itself (a block mask), so it computes exactly
    what separate sequences would. The frozen layers below the first LoRA layer see each example
    once, when this is built; their output is kept. `check` compares with the model's own forward.
    """

    def __init__(self, model: Any, encoded: Sequence[tuple[list[int], list[int]]], first_trained: int, chunk: int = 64):
        torch = _torch()
        self.model, self.encoded, self.first = model, encoded, first_trained
        self.inner = model.model  # peft wraps the projections in place: these modules carry the LoRA
        prompts = [[t for t, label in zip(ids, labels, strict=True) if label == -100] for ids, labels in encoded]
        shared = min(len(p) for p in prompts) - 1  # each rest keeps the token that predicts its first label
        for p in prompts[1:]:
            shared = min(shared, common_prefix(prompts[0], p))
        self.prefix = encoded[0][0][:shared]
        self.rests: list[Any] = []
        self.prefix_h: Any = None
        with torch.no_grad():
            for start in range(0, len(encoded), chunk):
                part = list(range(start, min(start + chunk, len(encoded))))
                ids = torch.tensor([self.prefix + [t for i in part for t in encoded[i][0][shared:]]])
                pos, mask = self._layout(part)
                h = self.inner.embed_tokens(ids)
                rope = self.inner.rotary_emb(h, pos)
                for layer in self.inner.layers[:first_trained]:
                    h = layer(h, attention_mask=mask, position_ids=pos, position_embeddings=rope)
                if self.prefix_h is None:  # the same in every chunk: kept once, not as a view of a chunk
                    self.prefix_h = h[:, :shared].clone()
                at = shared
                for i in part:
                    n = len(encoded[i][0]) - shared
                    self.rests.append(h[:, at : at + n].clone())
                    at += n

    def _layout(self, batch: Sequence[int]) -> tuple[Any, Any]:
        """Position ids and the block-causal mask (True = may attend) of a packed batch."""
        torch = _torch()
        shared = len(self.prefix)
        segment, positions = [0] * shared, list(range(shared))
        for k, i in enumerate(batch, start=1):
            n = len(self.encoded[i][0]) - shared
            segment += [k] * n
            positions += range(shared, shared + n)
        seg = torch.tensor(segment)
        causal = torch.ones(len(segment), len(segment), dtype=torch.bool).tril()
        mask = causal & ((seg[None, :] == 0) | (seg[None, :] == seg[:, None]))
        return torch.tensor([positions]), mask[None, None]

    def token_nll(self, batch: Sequence[int]) -> Any:
        """Cross-entropy of each reply token of the batch, in order."""
        torch = _torch()
        shared = len(self.prefix)
        h = torch.cat([self.prefix_h, *(self.rests[i] for i in batch)], dim=1)
        pos, mask = self._layout(batch)
        rope = self.inner.rotary_emb(h, pos)
        for layer in self.inner.layers[self.first :]:
            h = layer(h, attention_mask=mask, position_ids=pos, position_embeddings=rope)
        where, targets, at = [], [], shared
        for i in batch:
            ids, labels = self.encoded[i]
            for t in range(shared + 1, len(ids)):
                if labels[t] != -100:
                    where.append(at + t - shared - 1)
                    targets.append(labels[t])
            at += len(ids) - shared
        logits = self.model.lm_head(self.inner.norm(h[0, where]))
        return torch.nn.functional.cross_entropy(logits.float(), torch.tensor(targets), reduction="none")

    def loss(self, batch: Sequence[int]) -> Any:
        """Mean cross-entropy over the batch's reply tokens (what the model's own loss computes)."""
        return self.token_nll(batch).mean()

    def check(self, peft_model: Any, batch: Sequence[int], tolerance: float = 1e-3) -> None:
        """Each reply token's loss must equal the model's own forward on its example alone (else refuse)."""
        torch = _torch()
        with torch.no_grad():
            packed = self.token_nll(batch)
            alone = []
            for i in batch:
                ids, labels = self.encoded[i]
                logits = peft_model(input_ids=torch.tensor([ids])).logits[0]
                at = [t - 1 for t in range(1, len(ids)) if labels[t] != -100]
                target = torch.tensor([labels[t + 1] for t in at])
                alone.append(torch.nn.functional.cross_entropy(logits[at].float(), target, reduction="none"))
            worst = float((packed - torch.cat(alone)).abs().max())
        if worst > tolerance:
            raise AdapterError(
                f"packed training computes losses up to {worst:.2g} off the model's own forward: this "
                "transformers version lays out layers differently; train without recipe.train_layers"
            )


def train(
    model: Any,
    tok: Any,
    examples: Sequence[Example],
    recipe: Recipe,
    *,
    on_step: Callable[[int, int, float], None] | None = None,
) -> tuple[Any, TrainResult]:
    """Fine-tune a LoRA on `examples` with a fixed seed; returns the peft model and what happened."""
    torch = _torch()
    from transformers import set_seed

    set_seed(recipe.seed)
    encoded = [e for e in (encode(tok, ex, recipe.max_length) for ex in examples) if e is not None]
    skipped = len(examples) - len(encoded)
    if not encoded:
        raise AdapterError(f"no example fits recipe.max_length = {recipe.max_length} tokens")
    peft_model = attach_lora(model, recipe)
    packed: PackedBatches | None = None
    if recipe.train_layers is not None:
        packed = PackedBatches(model, encoded, trained_layers(model, recipe)[0])
        peft_model.eval()  # no dropout: the check compares two exact computations
        packed.check(peft_model, list(range(min(2, len(encoded)))))
    peft_model.train()
    params = [p for p in peft_model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=recipe.learning_rate, weight_decay=0.0)
    per_epoch = math.ceil(len(encoded) / recipe.batch_size)
    total = max(1, math.ceil(per_epoch * recipe.epochs))
    warmup = max(1, total // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * max(0.0, (total - s) / max(1, total - warmup))
    )
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    rng = random.Random(recipe.seed)
    order: list[int] = []
    losses: list[float] = []
    t0 = time.perf_counter()
    for step in range(total):
        if len(order) < recipe.batch_size:
            more = list(range(len(encoded)))
            rng.shuffle(more)
            order += more
        chosen = order[: recipe.batch_size]
        del order[: recipe.batch_size]
        if packed is not None:
            loss = packed.loss(chosen)
        else:
            batch = [encoded[i] for i in chosen]
            width = max(len(ids) for ids, _ in batch)
            ids = torch.tensor([b[0] + [pad] * (width - len(b[0])) for b in batch])
            labels = torch.tensor([b[1] + [-100] * (width - len(b[1])) for b in batch])
            mask = torch.tensor([[1] * len(b[0]) + [0] * (width - len(b[0])) for b in batch])
            loss = peft_model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
        if on_step is not None:
            on_step(step + 1, total, losses[-1])
    peft_model.eval()
    tail = losses[-max(1, len(losses) // 10) :]
    return peft_model, TrainResult(
        examples=len(encoded), skipped_too_long=skipped, steps=total, first_loss=losses[0],
        final_loss=sum(tail) / len(tail), seconds=time.perf_counter() - t0,
    )  # fmt: skip


def greedy(peft_model: Any, tok: Any, example: Example, max_new_tokens: int = 48) -> str:
    """What the peft model itself answers (the reference the converted GGUF adapter must match)."""
    torch = _torch()
    ids = torch.tensor([tok(render(tok, example), add_special_tokens=False).input_ids])
    with torch.no_grad():
        out = peft_model.generate(
            ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens, do_sample=False,
            pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id,
        )  # fmt: skip
    return str(tok.decode(out[0, ids.shape[1] :], skip_special_tokens=True))
