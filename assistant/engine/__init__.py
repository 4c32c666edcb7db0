"""The on-device LLM: one shared base model behind a small protocol."""

from __future__ import annotations

from assistant.config.schema import AssistantConfig
from assistant.engine.types import (
    ChatMessage,
    Engine,
    EngineError,
    Generation,
    GenerationStats,
    Sampling,
)
from assistant.modelstore import ModelStore, Reporter


def load_engine(cfg: AssistantConfig, store: ModelStore | None = None, reporter: Reporter | None = None) -> Engine:
    """Verify the configured base model (hashing only if never verified) and load it once."""
    from assistant.engine.llama_cpp import LlamaCppEngine

    store = store or ModelStore.from_config(cfg)
    e = cfg.engine
    manifest = store.get(e.base_model)
    path = store.prepare(manifest, reporter)
    engine = LlamaCppEngine(
        path,
        name=e.base_model,
        context_size=e.context_size,
        batch_size=e.batch_size,
        threads=e.threads.target,
        threads_batch=e.threads.target_batch,
        gpu_layers=e.gpu_layers,
        prefix_slots=e.prefix_slots,
        base_sha256=manifest.sha256,
    )
    try:
        # Every configured adapter is loaded now, so a request never waits for a load.
        for name, adapter in cfg.adapters.items():
            engine.load_adapter(name, adapter.path, adapter.scale)
    except EngineError:
        engine.close()
        raise
    return engine


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
    "sampling_from_config",
]
