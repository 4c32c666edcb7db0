"""Model manifests: where a model's weights come from and how to recognise them."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

Sha256 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FileSource(_Strict):
    """A file on disk (relative paths are relative to the manifest)."""

    kind: Literal["file"]
    path: Path


class PackageSource(_Strict):
    """A file inside an installed Python distribution (pip package)."""

    kind: Literal["package"]
    package: str
    version: str
    path: str = Field(description="Path relative to the distribution's install root (site-packages).")


class Part(_Strict):
    """One piece of a split model; pieces are concatenated in order."""

    package: str | None = None
    version: str | None = None
    path: str
    size: int = Field(gt=0)
    sha256: Sha256

    @model_validator(mode="after")
    def _version_with_package(self) -> Part:
        if self.package is not None and self.version is None:
            raise ValueError("a part inside a package needs the package's version")
        return self


class FileEntry(_Strict):
    """One file of a model that is a folder of files."""

    name: str = Field(pattern=r"^[^/\\]+$")
    size: int = Field(gt=0)
    sha256: Sha256


class FilesSource(_Strict):
    """A model that is a folder of files inside an installed Python distribution (CTranslate2, ONNX)."""

    kind: Literal["files"]
    package: str
    version: str
    path: str = Field(description="Folder relative to the distribution's install root (site-packages).")
    files: list[FileEntry] = Field(min_length=1, description="Every file the runtime reads, each checked.")


class PartsSource(_Strict):
    kind: Literal["parts"]
    parts: list[Part] = Field(min_length=1)


QUANT_TYPES = ("F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q4_K_M", "Q5_K_M", "Q6_K")


class QuantizedSource(_Strict):
    """Made on this machine from another manifest's file by llama.cpp's quantizer (deterministic)."""

    kind: Literal["quantized"]
    base: str = Field(description="Manifest name of the model to re-quantize.")
    ftype: Literal[QUANT_TYPES] = Field(description="Target weight format.")  # type: ignore[valid-type]
    embedding: Literal["Q8_0"] | None = Field(
        None, description="Format of the token embedding and output head (default: llama.cpp's choice, often Q6_K)."
    )


Source = Annotated[
    FileSource | PackageSource | PartsSource | QuantizedSource | FilesSource, Field(discriminator="kind")
]


class ModelManifest(_Strict):
    """What one model is, where it comes from and how to check it."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]*$")
    description: str
    format: Literal["gguf", "ctranslate2", "onnx", "tflite"] = Field(
        "gguf", description="gguf: one file; others: a folder."
    )
    architecture: str = Field(description="GGUF general.architecture (llama, qwen2), or the model family (whisper).")
    parameters: str = Field(description="Human-readable size, e.g. 135M.")
    vocab_family: str = Field(description="Models of one family share token ids (draft/target pairs).")
    quantization: str
    license: str
    optional: bool = Field(False, description="Not needed by the default configuration.")
    size: int = Field(gt=0, description="Size in bytes of the complete model file.")
    sha256: Sha256 | None = Field(
        None, description="Unset only when the complete file cannot be assembled, or for a folder (each file has one)."
    )
    notes: str = ""
    source: Source
    manifest_path: Path | None = Field(None, exclude=True)

    @model_validator(mode="after")
    def _parts_add_up(self) -> ModelManifest:
        if isinstance(self.source, PartsSource) and self.sha256 is not None:
            total = sum(p.size for p in self.source.parts)
            if total != self.size:
                raise ValueError(f"parts add up to {total} bytes but size is {self.size}")
        if isinstance(self.source, FilesSource):
            total = sum(f.size for f in self.source.files)
            if total != self.size:
                raise ValueError(f"files add up to {total} bytes but size is {self.size}")
            if self.format == "gguf":
                raise ValueError("a gguf model is one file: use a package, file or parts source")
        elif self.format != "gguf":
            raise ValueError(f"a {self.format} model is a folder: use a files source")
        elif self.sha256 is None and not isinstance(self.source, PartsSource):
            raise ValueError("sha256 is required unless the model is an incomplete set of parts")
        return self

    @property
    def complete(self) -> bool:
        """False when the registry ships only some of the parts (recorded, never usable)."""
        return self.sha256 is not None or isinstance(self.source, FilesSource)


class ManifestError(Exception):
    """A manifest file that cannot be used, named with its cause."""


def load_manifest(path: Path) -> ModelManifest:
    try:
        data = tomllib.loads(path.read_text("utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ManifestError(f"manifest {path}: cannot read: {exc}") from exc
    try:
        manifest = ModelManifest.model_validate(data)
    except ValidationError as exc:
        details = "; ".join(f"{'.'.join(str(x) for x in e['loc'])}: {e['msg']}" for e in exc.errors(include_url=False))
        raise ManifestError(f"manifest {path}: {details}") from exc
    return manifest.model_copy(update={"manifest_path": path})
