"""A skill's training recipe (`adapters/<skill>/recipe.toml`) and the dataset module beside it."""

from __future__ import annotations

import hashlib
import importlib.util
import tomllib
from pathlib import Path
from types import ModuleType
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from assistant.engine import ChatMessage
from assistant.engine.lora import AdapterError
from assistant.paths import bundled_dir

ADAPTERS_DIR = bundled_dir("adapters")


class Recipe(BaseModel):
    """How an adapter is trained; its sha256 goes into the adapter's manifest."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    skill: str
    base_model: str = Field(description="Manifest name of the base model (the GGUF the engine runs).")
    rank: int = Field(16, gt=0, le=256)
    alpha: float = Field(32, gt=0)
    dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: list[str] = Field(["q_proj", "k_proj", "v_proj", "o_proj"], min_length=1)
    epochs: float = Field(3, gt=0, le=100)
    learning_rate: float = Field(1e-3, gt=0, lt=1)
    batch_size: int = Field(8, gt=0, le=256)
    max_length: int = Field(256, ge=16, le=4096, description="Longer examples are skipped, with a count.")
    seed: int = 1234
    train_size: int = Field(600, gt=0, description="Generated + hand-written examples used for training.")
    train_layers: int | None = Field(
        None, gt=0, description="LoRA on the last N layers only: the frozen layers below run once per example "
        "and the prompt all examples share once per batch (what makes a 1.5B base trainable on 2 cores)."
    )  # fmt: skip


class Example(BaseModel):
    """One training or evaluation case: the prompt as the skill sends it, and the wanted reply."""

    messages: list[ChatMessage]
    target: str
    meta: dict[str, Any] = {}


class AdapterProject:
    """`adapters/<skill>/`: recipe.toml plus dataset.py, which provides
    `train_examples(seed, n) -> list[Example]`, `heldout_examples() -> list[Example]`,
    `score(example, output) -> float` (1.0 = right) and optionally `GRAMMAR` (output constraint),
    `METRIC` (its name), `MAX_TOKENS` (reply budget) and `predict(engine, example, adapter)`
    (when the skill's output is more than one generation)."""

    def __init__(self, name: str, root: Path = ADAPTERS_DIR):
        self.name, self.dir = name, root / name
        recipe_file = self.dir / "recipe.toml"
        if not recipe_file.is_file():
            raise AdapterError(f"no training recipe for skill '{name}': {recipe_file} is missing")
        raw = recipe_file.read_bytes()
        self.recipe_sha256 = hashlib.sha256(raw).hexdigest()
        try:
            self.recipe = Recipe.model_validate(tomllib.loads(raw.decode()))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
            raise AdapterError(f"{recipe_file}: not valid TOML: {e}") from e
        except ValidationError as e:
            details = "; ".join(f"{'.'.join(str(x) for x in err['loc'])}: {err['msg']}" for err in e.errors())
            raise AdapterError(f"{recipe_file}: {details}") from e
        self.dataset = self._module()

    def _module(self) -> ModuleType:
        path = self.dir / "dataset.py"
        if not path.is_file():
            raise AdapterError(f"skill '{self.name}': {path} (its examples and metric) is missing")
        spec = importlib.util.spec_from_file_location(f"adapters_{self.name}_dataset", path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    def train_examples(self, n: int | None = None) -> list[Example]:
        examples: list[Example] = self.dataset.train_examples(self.recipe.seed, n or self.recipe.train_size)
        held = {utterance_key(e) for e in self.heldout_examples()}
        leaked = [e for e in examples if utterance_key(e) in held]
        if leaked:
            raise AdapterError(f"skill '{self.name}': {len(leaked)} held-out examples are in the training set")
        return examples

    def heldout_examples(self) -> list[Example]:
        return list(self.dataset.heldout_examples())

    def score(self, example: Example, output: str) -> float:
        return float(self.dataset.score(example, output))

    @property
    def grammar(self) -> str | None:
        return getattr(self.dataset, "GRAMMAR", None)

    @property
    def adapter_path(self) -> Path:
        return self.dir / f"{self.name}.gguf"


def utterance_key(e: Example) -> str:
    """What makes two examples the same sentence (for keeping held-out cases out of training)."""
    return e.messages[-1].content.strip().lower()
