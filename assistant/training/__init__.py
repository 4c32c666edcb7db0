"""The adapter toolchain: a skill's examples → peft LoRA → GGUF LoRA the engine hot-swaps → eval.

assistant adapters train home     # recipe and data in adapters/home/; needs the train extra
assistant adapters eval home      # base vs adapter on the held-out set, on the runtime engine
"""

from __future__ import annotations

from assistant.training.convert import convert_peft, gguf_pairs, rope_permute
from assistant.training.evaluate import EvalReport, evaluate, write_report
from assistant.training.recipe import ADAPTERS_DIR, AdapterProject, Example, Recipe
from assistant.training.skill import TrainReport, train_skill

__all__ = [
    "ADAPTERS_DIR",
    "EvalReport",
    "Example",
    "Recipe",
    "AdapterProject",
    "TrainReport",
    "convert_peft",
    "evaluate",
    "gguf_pairs",
    "rope_permute",
    "train_skill",
    "write_report",
]
