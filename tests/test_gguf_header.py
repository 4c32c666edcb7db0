from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from gguf import GGUFWriter

from assistant.modelstore.gguf_header import GGUFHeaderError, read_keys


def test_reads_keys_after_arrays_written_by_the_gguf_package(tmp_path: Path) -> None:
    path = tmp_path / "m.gguf"
    w = GGUFWriter(str(path), "llama")
    w.add_token_list(["a", "bb", "ccc"] * 1000)
    w.add_array("test.ints", [1, 2, 3])
    w.add_string("general.name", "tiny")
    w.add_uint32("test.after", 42)
    w.add_tensor("t", np.zeros((4, 4), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    got = read_keys(path, {"general.architecture", "general.name", "test.after", "test.ints"})
    assert got == {"general.architecture": "llama", "general.name": "tiny", "test.after": 42, "test.ints": [1, 2, 3]}
    assert read_keys(path, {"missing.key"}) == {}


def test_rejects_non_gguf_and_truncated_headers(tmp_path: Path, default_model_path: Path) -> None:
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"PK\x03\x04 zip file")
    with pytest.raises(GGUFHeaderError, match="bad magic"):
        read_keys(bad, {"general.architecture"})
    short = tmp_path / "short.gguf"
    short.write_bytes(default_model_path.read_bytes()[:100])
    with pytest.raises(GGUFHeaderError, match="ends inside"):
        read_keys(short, {"no.such.key"})


def test_layout_maps_every_tensor_exactly_as_the_gguf_package_reads_it(default_model_path: Path) -> None:
    from gguf import GGUFReader

    from assistant.modelstore.gguf_header import read_layout

    layout = read_layout(default_model_path)
    reader = GGUFReader(str(default_model_path))
    assert layout.fields["general.architecture"] == "llama" and layout.fields["tokenizer.ggml.tokens"] == 49152
    assert set(layout.tensors) == {t.name for t in reader.tensors}
    for t in reader.tensors:
        ours = layout.array(t.name)
        assert ours.dtype == np.asarray(t.data).dtype and np.array_equal(ours, np.asarray(t.data)), t.name


def test_layout_of_a_truncated_file_names_the_tensor_past_its_end(tmp_path: Path, default_model_path: Path) -> None:
    from assistant.modelstore.gguf_header import read_layout

    cut = tmp_path / "cut.gguf"
    with default_model_path.open("rb") as src:
        cut.write_bytes(src.read(40_000_000))
    with pytest.raises(GGUFHeaderError, match="lies past the end of the file"):
        read_layout(cut)
