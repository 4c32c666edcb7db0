from __future__ import annotations

import hashlib
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from assistant.config import load_config
from assistant.modelstore import ModelStore

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"
DEFAULT_MODEL = "smollm2-135m-instruct-q4_1"  # the small profile's base: fast enough for most tests
STANDARD_MODEL = "qwen2.5-coder-1.5b-instruct-q4_k_m"


def free_port() -> int:
    """A loopback TCP port nothing listens on (for the servers the tests start)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never read or write the user's real model cache or state; learned state is per test."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.getbasetemp() / "xdg-cache"))
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg-state"))
    monkeypatch.delenv("ASSISTANT_CONFIG", raising=False)
    monkeypatch.delenv("ASSISTANT_PROFILE", raising=False)


@pytest.fixture(scope="session")
def default_model_path() -> Path:
    """The real default GGUF, installed by scripts/install.sh (a failure here means the install is broken)."""
    store = ModelStore.from_config(load_config())
    return store.locate(store.get(DEFAULT_MODEL))


@pytest.fixture(scope="session")
def tests_store(tmp_path_factory: pytest.TempPathFactory) -> ModelStore:
    """The model store of the tests' cache, which _isolated_cache points each test at (session fixtures
    are set up before it, so they take this one)."""
    from assistant.engine import model_store

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_CACHE_HOME", str(tmp_path_factory.getbasetemp() / "xdg-cache"))
        return model_store(load_config())  # the store keeps the folder it was made with


@pytest.fixture(scope="session")
def standard_model_path(tests_store: ModelStore) -> Path:
    """The standard profile's 1.5B base, assembled in the tests' cache from the packages scripts/test.sh installs."""
    manifest = tests_store.get(STANDARD_MODEL)
    if tests_store.missing_packages(manifest):
        pytest.skip(f"the standard model's packages are missing: assistant models prepare {STANDARD_MODEL} --install")
    return tests_store.prepare(manifest)


@pytest.fixture(scope="session")
def standard_engine(standard_model_path: Path) -> Iterator[object]:
    """The standard profile's base on llama.cpp, as `load_engine` builds it (draft aside)."""
    from assistant.engine.llama_cpp import LlamaCppEngine

    eng = LlamaCppEngine(standard_model_path, name=STANDARD_MODEL, context_size=2048, threads=2, threads_batch=2)
    yield eng
    eng.close()


@pytest.fixture(scope="session")
def base_sha() -> str:
    """sha256 of the default base model, as adapters record it."""
    sha = ModelStore().get(DEFAULT_MODEL).sha256
    assert sha is not None
    return sha


@pytest.fixture(scope="session")
def engine(default_model_path: Path) -> Iterator[object]:
    from assistant.engine.llama_cpp import LlamaCppEngine

    eng = LlamaCppEngine(default_model_path, name=DEFAULT_MODEL, context_size=1024, threads=2, threads_batch=2)
    yield eng
    eng.close()


@pytest.fixture(scope="session")
def tvm_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One TVM artifact cache for the session: the default model is compiled once (about 20 s)."""
    return tmp_path_factory.mktemp("tvm-cache")


@pytest.fixture(scope="session")
def tvm_engine(default_model_path: Path, base_sha: str, tvm_cache: Path) -> Iterator[object]:
    """The default model compiled with TVM for this CPU, behind the same Engine protocol."""
    pytest.importorskip("tvm", reason="the tvm extra (scripts/test.sh installs it)")
    from assistant.engine.tvm.engine import TvmEngine

    eng = TvmEngine(default_model_path, model_sha256=base_sha, cache_dir=tvm_cache, name=DEFAULT_MODEL,
                    context_size=1024, threads=2)  # fmt: skip
    yield eng
    eng.close()


def draft_manifests(folder: Path, model_path: Path) -> Path:
    """A manifest folder offering the default model again as `smollm2-as-draft` (its own draft)."""
    base = ModelStore().get(DEFAULT_MODEL)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "draft.toml").write_text(
        f'name = "smollm2-as-draft"\ndescription = "the default model, used as its own draft"\n'
        f'architecture = "llama"\nparameters = "135M"\nvocab_family = "smollm2"\nquantization = "Q4_1"\n'
        f'license = "Apache-2.0"\nsize = {base.size}\nsha256 = "{base.sha256}"\n'
        f'[source]\nkind = "file"\npath = "{model_path}"\n'
    )
    return folder


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def make_distribution(site: Path, name: str, version: str, files: dict[str, bytes]) -> None:
    """A minimal installed distribution (dist-info + files) that importlib.metadata can find."""
    for rel, data in files.items():
        target = site / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    info = site / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    (info / "RECORD").write_text("".join(f"{rel},,\n" for rel in files))


@pytest.fixture()
def cpu_count() -> int:
    return os.cpu_count() or 1
