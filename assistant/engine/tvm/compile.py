"""The compile step: the graph built for a target and compiled, the artifact cached.

Compiled artifacts are cached under `cache_dir` keyed by the model's sha256, the target, the
quantization and the TVM version; a file whose key does not match is rebuilt, never loaded.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from assistant.engine.tvm.target import TargetKind, cross_compiled, missing_codegen, resolve_target
from assistant.engine.tvm.weights import LlamaShape, open_gguf
from assistant.engine.types import EngineError


@dataclass(frozen=True)
class ArtifactKey:
    model_sha256: str
    target: str
    quantization: str
    tvm_version: str
    layout: int = 15  # bump when the graph or weight layout changes

    @property
    def digest(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:20]


COMPILE_STAGES = ("tracing the graph", "compiling", "writing the library")


def compile_model(
    gguf_path: Path,
    model_sha256: str,
    kind: TargetKind,
    cache_dir: Path,
    *,
    threads: int = 2,
    int8_activations: bool = False,
    on_stage: Callable[[int], None] | None = None,
) -> tuple[Path, list[str], float]:
    """(library path, parameter names, seconds spent compiling: 0 when the cached artifact fits).

    `on_stage(i)` is called as stage i of `COMPILE_STAGES` starts (for a progress bar)."""
    shape = LlamaShape.from_gguf(open_gguf(gguf_path))
    return compile_shape(
        shape, model_sha256, kind, cache_dir, threads=threads, int8_activations=int8_activations, on_stage=on_stage
    )


def compile_shape(
    shape: LlamaShape,
    model_sha256: str,
    kind: TargetKind,
    cache_dir: Path,
    *,
    threads: int = 2,
    int8_activations: bool = False,
    on_stage: Callable[[int], None] | None = None,
) -> tuple[Path, list[str], float]:
    """`compile_model` for a caller that has read the GGUF already."""
    stage = on_stage or (lambda _: None)
    import tvm

    from assistant.engine.tvm.graph import build_module  # TVM at its top: like `import tvm`, when compiling only

    problem = missing_codegen(kind)
    if problem is not None:
        raise EngineError(f"cannot compile for {kind}: {problem}")
    target = resolve_target(kind, threads=threads)
    quantization = "q4_1+q8_0" + ("+int8-activations" if int8_activations else "")
    key = ArtifactKey(model_sha256, str(target), quantization, tvm.__version__)
    folder = cache_dir / key.digest
    # A cross-compiled build is a .tar of objects: the device links it when it loads it.
    library, stamp = folder / ("model.tar" if cross_compiled(kind) else "model.so"), folder / "key.json"
    names_file = folder / "params.json"
    if library.is_file() and stamp.is_file() and names_file.is_file():
        try:
            if json.loads(stamp.read_text()) == asdict(key):
                return library, list(json.loads(names_file.read_text())), 0.0
        except ValueError:
            pass  # a corrupt stamp: rebuild
    t0 = time.perf_counter()
    stage(0)
    mod, names = build_module(shape, kind, threads, int8_activations)
    stage(1)
    with target:
        executable = tvm.compile(mod, target)
    stage(2)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f"partial-{library.name}"  # the suffix tells TVM what to write
    executable.export_library(str(tmp))
    tmp.replace(library)
    names_file.write_text(json.dumps(names))
    stamp.write_text(json.dumps(asdict(key)))
    return library, names, time.perf_counter() - t0
