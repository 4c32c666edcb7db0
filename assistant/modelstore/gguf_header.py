"""Read single metadata keys from a GGUF header without parsing the whole file.

`gguf.GGUFReader` builds every tensor and vocabulary entry (about 5 s for a 98 MB
model); load-time checks only need a key or two, which writers put first.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import BinaryIO

from gguf import GGUFValueType

_SCALARS = {
    GGUFValueType.UINT8: "<B",
    GGUFValueType.INT8: "<b",
    GGUFValueType.UINT16: "<H",
    GGUFValueType.INT16: "<h",
    GGUFValueType.UINT32: "<I",
    GGUFValueType.INT32: "<i",
    GGUFValueType.FLOAT32: "<f",
    GGUFValueType.BOOL: "<?",
    GGUFValueType.UINT64: "<Q",
    GGUFValueType.INT64: "<q",
    GGUFValueType.FLOAT64: "<d",
}


class GGUFHeaderError(ValueError):
    pass


def _read(fh: BinaryIO, fmt: str) -> int | float | bool:
    size = struct.calcsize(fmt)
    raw = fh.read(size)
    if len(raw) != size:
        raise GGUFHeaderError("file ends inside the GGUF header")
    return struct.unpack(fmt, raw)[0]  # type: ignore[no-any-return]


def _string(fh: BinaryIO) -> str:
    n = int(_read(fh, "<Q"))
    if n > 1 << 24:
        raise GGUFHeaderError(f"implausible string length {n} in GGUF header")
    return fh.read(n).decode("utf-8", "replace")


def _value(fh: BinaryIO, vtype: int, keep: bool) -> object:
    t = GGUFValueType(vtype)
    if t == GGUFValueType.STRING:
        return _string(fh)
    if t == GGUFValueType.ARRAY:
        item = GGUFValueType(int(_read(fh, "<I")))
        count = int(_read(fh, "<Q"))
        if item in _SCALARS and not keep:
            fh.seek(struct.calcsize(_SCALARS[item]) * count, 1)
            return None
        return [_value(fh, item, keep) for _ in range(count)]
    return _read(fh, _SCALARS[t])


def read_keys(path: Path, keys: set[str]) -> dict[str, object]:
    """Values of `keys` found in the header; stops as soon as all are found."""
    found: dict[str, object] = {}
    with Path(path).open("rb") as fh:
        if fh.read(4) != b"GGUF":
            raise GGUFHeaderError("not a GGUF file (bad magic)")
        version = int(_read(fh, "<I"))
        if version not in (2, 3):
            raise GGUFHeaderError(f"unsupported GGUF version {version}")
        _read(fh, "<Q")  # tensor count
        n_kv = int(_read(fh, "<Q"))
        for _ in range(n_kv):
            key = _string(fh)
            vtype = int(_read(fh, "<I"))
            value = _value(fh, vtype, keep=key in keys)
            if key in keys:
                found[key] = value
                if len(found) == len(keys):
                    break
    return found
