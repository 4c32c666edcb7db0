"""The on-device LLM: one shared base model behind a small protocol (`types.Engine`).

- `types.py`: the protocol and its messages; `local.py`: the generation loop shared by in-process backends;
- `llama_cpp/` and `tvm/`: the backends; `speculative.py` + `costmodel.py`: CPU-draft speculation;
- `lora.py`: adapter files; `load.py`: builds the configured engine.
"""

from __future__ import annotations

from assistant.config.schema import AssistantConfig
from assistant.engine.load import load_engine, model_store
from assistant.engine.types import ChatMessage, Engine, EngineError, Generation, GenerationStats, Sampling


def sampling_from_config(cfg: AssistantConfig) -> Sampling:
    e = cfg.engine
    return Sampling(temperature=e.temperature, top_k=e.top_k, top_p=e.top_p, seed=e.seed)


__all__ = [
    "ChatMessage",
    "Engine",
    "EngineError",
    "Generation",
    "GenerationStats",
    "Sampling",
    "load_engine",
    "model_store",
    "sampling_from_config",
]
