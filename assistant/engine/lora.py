"""Per-skill LoRA adapters: manifests and the checks made before llama.cpp ever sees a file."""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from assistant.engine.types import EngineError

Sha256 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
# Formats that can execute code when loaded; never opened, whatever the config says.
PICKLE_SUFFIXES = {".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt"}


class AdapterManifest(BaseModel):
    """Sidecar `<adapter>.toml`: which base the adapter was trained for, and how."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    base_model: str = Field(description="Manifest name of the base model it was trained on.")
    base_sha256: Sha256 = Field(description="sha256 of that base model's GGUF file.")
    rank: int = Field(gt=0)
    alpha: float = Field(gt=0)
    target_modules: list[str] = Field(min_length=1)
    recipe_sha256: Sha256 | None = Field(None, description="sha256 of the training recipe file.")
    description: str = ""


class AdapterError(EngineError):
    """An adapter that cannot be used, or a request naming one that is not loaded."""


def manifest_path_for(path: Path) -> Path:
    return path.with_suffix(".toml")


def read_adapter_manifest(path: Path) -> AdapterManifest:
    """The manifest next to a GGUF LoRA file, or a clear error naming it."""
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise AdapterError(f"adapter {path}: pickle-based formats are never loaded; convert it to GGUF")
    if path.suffix.lower() != ".gguf":
        raise AdapterError(f"adapter {path}: the runtime loads GGUF LoRA files only (convert safetensors first)")
    if not path.is_file():
        raise AdapterError(f"adapter {path}: file is missing")
    mpath = manifest_path_for(path)
    if not mpath.is_file():
        raise AdapterError(
            f"adapter {path}: manifest {mpath} is missing, so the base model it was built for cannot be checked"
        )
    try:
        return AdapterManifest.model_validate(tomllib.loads(mpath.read_text("utf-8")))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise AdapterError(f"adapter manifest {mpath}: not valid TOML: {exc}") from exc
    except ValidationError as exc:
        details = "; ".join(f"{'.'.join(str(x) for x in e['loc'])}: {e['msg']}" for e in exc.errors(include_url=False))
        raise AdapterError(f"adapter manifest {mpath}: {details}") from exc


def check_base(manifest: AdapterManifest, path: Path, base_name: str, base_sha256: str | None) -> None:
    if base_sha256 is not None and manifest.base_sha256 != base_sha256:
        raise AdapterError(
            f"adapter {path} was built for base '{manifest.base_model}' (sha256 {manifest.base_sha256[:12]}...) "
            f"but the engine runs '{base_name}' (sha256 {base_sha256[:12]}...): retrain or convert it for this base"
        )


def write_gguf_lora(
    path: Path,
    *,
    architecture: str,
    alpha: float,
    pairs: Mapping[str, tuple[object, object]],
    manifest: AdapterManifest | None = None,
    dtype: str = "float32",
) -> None:
    """Write a GGUF LoRA that llama.cpp loads at run time (and its sidecar manifest).

    `pairs` maps a base tensor name (e.g. ``blk.0.attn_q.weight``) to (A, B) arrays with
    A of shape (rank, n_in) and B of shape (n_out, rank), so that W' = W + scale*alpha/rank * B @ A.
    """
    import numpy as np
    from gguf import GGUFWriter

    writer = GGUFWriter(str(path), architecture)
    writer.add_type("adapter")
    writer.add_string("adapter.type", "lora")
    writer.add_float32("adapter.lora.alpha", float(alpha))
    for name, (a, b) in pairs.items():
        a32, b32 = np.ascontiguousarray(a, dtype=dtype), np.ascontiguousarray(b, dtype=dtype)
        if a32.ndim != 2 or b32.ndim != 2 or a32.shape[0] != b32.shape[1]:
            raise ValueError(f"{name}: A {a32.shape} and B {b32.shape} do not form a LoRA pair")
        writer.add_tensor(f"{name}.lora_a", a32)
        writer.add_tensor(f"{name}.lora_b", b32)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    if manifest is not None:
        import tomli_w

        manifest_path_for(path).write_text(tomli_w.dumps(manifest.model_dump(exclude_none=True)))
