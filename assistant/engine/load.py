"""Building the configured engine: the base model (llama.cpp or TVM), its adapters, and the CPU
draft for speculation; and the model store that can make every model the manifests describe."""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path

from assistant.config.loader import ConfigProblem
from assistant.config.schema import AssistantConfig
from assistant.engine.local import LocalEngine
from assistant.engine.lora import AdapterError, check_base, read_adapter_manifest
from assistant.engine.prefix_store import PrefixStore
from assistant.engine.types import Engine, EngineError
from assistant.modelstore import ModelStore, Reporter
from assistant.modelstore.gguf_header import GGUFHeaderError, read_keys, read_layout

log = logging.getLogger("assistant.engine")


def _quantize(source: Path, target: Path, ftype: str, *, embedding: str | None = None) -> None:
    from assistant.engine.llama_cpp import quantize_model  # the llama.cpp library loads only when needed

    quantize_model(source, target, ftype, embedding=embedding)


def model_store(cfg: AssistantConfig) -> ModelStore:
    """The configured model store, with llama.cpp's quantizer for models made by re-quantizing."""
    return ModelStore.from_config(cfg, quantizer=_quantize)


def load_engine(cfg: AssistantConfig, store: ModelStore | None = None, reporter: Reporter | None = None) -> Engine:
    """Verify the configured base model (hashing only if never verified) and load it once."""
    store = store or model_store(cfg)
    e = cfg.engine
    if e.backend != "tvm":
        from assistant.engine.llama_cpp.native import init_backend

        init_backend(e.gpu_device)  # first: preparing a model (re-quantizing) would start llama.cpp without it
    for problem in context_problems(cfg, store):
        log.warning("%s", problem.render())
    manifest = store.get(e.base_model)
    path = store.prepare(manifest, reporter)
    engine = _load_base(cfg, path, manifest.sha256)
    if manifest.sha256 and e.backend in ("llama_cpp", "openai"):  # openai: the local fallback
        from importlib.metadata import version

        # A state file holds one KV stream per sequence: it loads only into as many streams.
        runtime = f"llama-cpp-{version('llama-cpp-python')}-{1 + e.prefix_slots}streams"
        kv = cfg.models.resolved_cache_dir / "kv" / f"{manifest.sha256[:16]}-{runtime}"
        engine.prefix_store = PrefixStore(kv)
    try:
        # Every configured adapter is loaded now, so a request never waits for a load.
        for name, adapter in cfg.adapters.items():
            assert adapter.path is not None  # the config fills in shipped adapters
            engine.load_adapter(name, adapter.path, adapter.scale)
        local = _with_draft(cfg, store, engine, reporter) if e.speculative.enabled and e.draft_model else engine
    except EngineError:
        engine.close()
        raise
    return _remote(cfg, local) if e.backend == "openai" else local


def _remote(cfg: AssistantConfig, local: Engine) -> Engine:
    """The home server, with the local engine as its fallback."""
    try:
        from assistant.engine.remote import RemoteEngine
    except ImportError as exc:
        local.close()
        raise EngineError(
            f"engine.backend = 'openai' needs the OpenAI client ({exc}): pip install 'assistant[remote]', "
            "or set engine.backend = 'llama_cpp'"
        ) from None
    return RemoteEngine(cfg.engine.remote, local)


def _load_base(cfg: AssistantConfig, path: Path, sha256: str | None) -> LocalEngine:
    e = cfg.engine
    if e.backend == "tvm":
        try:
            from assistant.engine.tvm.engine import TvmEngine
        except ImportError as exc:
            raise EngineError(
                f"engine.backend = 'tvm' needs Apache TVM ({exc}): pip install 'assistant[tvm]', "
                "or set engine.backend = 'llama_cpp'"
            ) from None
        return TvmEngine(
            path,
            model_sha256=sha256 or "",
            cache_dir=cfg.models.resolved_cache_dir / "tvm",
            name=e.base_model,
            kind=e.tvm.target,
            int8_activations=e.tvm.int8_activations,
            context_size=e.context_size,
            batch_size=e.batch_size,
            threads=e.threads.target,
            prefix_slots=e.prefix_slots,
        )
    from assistant.engine.llama_cpp import LlamaCppEngine

    return LlamaCppEngine(
        path,
        name=e.base_model,
        context_size=e.context_size,
        batch_size=e.batch_size,
        threads=e.threads.target,
        threads_batch=e.threads.target_batch,
        gpu_layers=e.gpu_layers,
        gpu_device=e.gpu_device,
        prefix_slots=e.prefix_slots,
        flash_attn=e.flash_attn,
        base_sha256=sha256,
    )


def _with_draft(cfg: AssistantConfig, store: ModelStore, target: LocalEngine, reporter: Reporter | None) -> Engine:
    from assistant.engine.llama_cpp import LlamaCppEngine
    from assistant.engine.speculative import SpeculativeEngine

    e = cfg.engine
    assert e.draft_model is not None and isinstance(target, LocalEngine)
    base, draft_manifest = store.get(e.base_model), store.get(e.draft_model)
    if draft_manifest.vocab_family != base.vocab_family:
        raise EngineError(
            f"draft model '{draft_manifest.name}' uses the {draft_manifest.vocab_family} vocabulary but the base "
            f"'{base.name}' uses {base.vocab_family}: choose a draft of the same family"
        )
    draft = LlamaCppEngine(
        store.prepare(draft_manifest, reporter),
        name=draft_manifest.name,
        context_size=e.context_size,
        batch_size=e.batch_size,
        threads=e.threads.draft,  # the draft always runs on the CPU, on threads of its own
        threads_batch=e.threads.draft,
        gpu_layers=0,
        prefix_slots=e.prefix_slots,
        flash_attn=e.flash_attn,
    )
    try:
        spec = SpeculativeEngine(
            target,
            draft,
            max_draft=e.speculative.max_draft,
            fixed_k=None if e.speculative.adaptive else e.speculative.max_draft,
        )
        # Now, so the first request does not pay for it; kept per device and model pair between starts.
        spec.calibrate(_calibration_file(cfg, base.sha256, draft_manifest.sha256), cfg.models.reverify_days * 86400)
    except EngineError:
        draft.close()
        raise
    return spec


def _calibration_file(cfg: AssistantConfig, target_sha: str | None, draft_sha: str | None) -> Path:
    """One file per device (CPU, threads, offload), model pair and runtime version."""
    import hashlib
    import platform
    from importlib.metadata import version

    e = cfg.engine
    cpu = platform.processor()
    with contextlib.suppress(OSError):
        cpu = next((ln for ln in Path("/proc/cpuinfo").read_text().splitlines() if ln.startswith("model name")), cpu)
    threads = (e.threads.target, e.threads.target_batch, e.threads.draft)
    gpus: tuple[str, ...] = ()
    if e.gpu_layers and e.backend != "tvm":  # a Vulkan build and a CPU build of one version are other devices
        from assistant.engine.llama_cpp.native import gpu_devices

        gpus = tuple(gpu_devices())
    key = [target_sha, draft_sha, e.backend, e.tvm.target, e.gpu_layers, e.gpu_device, gpus, threads,
           e.speculative.max_draft, e.context_size, os.cpu_count(), cpu, version("llama-cpp-python")]  # fmt: skip
    digest = hashlib.sha256(repr(key).encode()).hexdigest()[:24]
    return cfg.models.resolved_cache_dir / "calibration" / f"{digest}.json"


def context_problems(cfg: AssistantConfig, store: ModelStore | None = None) -> list[ConfigProblem]:
    """A context longer than the base model was trained for costs memory (the KV cache grows with it)
    and gives no better answers: said, not silently accepted."""
    store = store or model_store(cfg)
    base = store.manifests.get(cfg.engine.base_model)
    path = store.locate(base) if base is not None else None
    if base is None or path is None or not path.is_file():
        return []
    try:
        fields = read_keys(path, {f"{base.architecture}.context_length"})
    except (GGUFHeaderError, OSError):
        return []
    trained = fields.get(f"{base.architecture}.context_length")
    if not isinstance(trained, int) or cfg.engine.context_size <= trained:
        return []
    return [
        ConfigProblem(
            key="engine.context_size",
            message=f"{cfg.engine.context_size} tokens is more than '{base.name}' was trained for ({trained}); the KV "
            "cache grows with it and answers past the trained length are not better",
            fix=f"set engine.context_size to at most {trained} (2048-4096 is plenty for spoken turns)",
            severity="warning",
        )
    ]


def adapter_problems(cfg: AssistantConfig, store: ModelStore | None = None) -> list[ConfigProblem]:
    """Each configured adapter checked as loading it would, short of loading the base model: format,
    manifest, the base it was built for, and a complete GGUF LoRA (`assistant config check`)."""
    store = store or model_store(cfg)
    base = store.manifests.get(cfg.engine.base_model)
    problems = []
    for name, adapter in cfg.adapters.items():
        path = adapter.path
        try:
            if path is None:
                raise AdapterError(f"adapter '{name}' has no path and no skill ships one")
            manifest = read_adapter_manifest(path)
            check_base(manifest, path, cfg.engine.base_model, base.sha256 if base else None)
            fields = read_layout(path).fields  # refuses a truncated file: a tensor past its end
            kind = (fields.get("general.type"), fields.get("adapter.type"))
            if kind != ("adapter", "lora"):
                raise AdapterError(f"adapter {path}: not a GGUF LoRA adapter (general.type, adapter.type = {kind})")
            if base is not None and fields.get("general.architecture") != base.architecture:
                arch = fields.get("general.architecture")
                raise AdapterError(
                    f"adapter {path} is for a {arch} model, the base '{base.name}' is {base.architecture}"
                )
        except (AdapterError, GGUFHeaderError, OSError) as exc:
            problems.append(
                ConfigProblem(
                    key=f"adapters.{name}.path",
                    message=str(exc),
                    fix=f"point it at a GGUF LoRA built for '{cfg.engine.base_model}' "
                    f"(`assistant adapters train {name}`), or remove [adapters.{name}]",
                )
            )
    return problems
