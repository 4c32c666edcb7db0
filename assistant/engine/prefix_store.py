"""Long fixed prompt prefixes' KV state on disk, so a fresh process does not evaluate them again.

The standard profile's classifier prompt is 1,023 tokens: about 11 s to evaluate on 2 cores, paid by
every fresh process (a one-shot `assistant ask`, or the start of `assistant run`). Its KV state is
about 29 MB and loads in milliseconds. Files are keyed by the tokens and live in a folder per model
checksum and runtime version (the caller picks it), so a changed model or runtime never reads them.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from pathlib import Path

import numpy as np

log = logging.getLogger("assistant.engine")
MIN_TOKENS = 256  # shorter prefixes evaluate in well under a second: not worth a file


class PrefixStore:
    def __init__(self, folder: Path):
        self.folder = folder

    def _path(self, tokens: list[int]) -> Path:
        return self.folder / f"{hashlib.sha256(np.asarray(tokens, dtype=np.int32).tobytes()).hexdigest()[:32]}.kv"

    def load(self, tokens: list[int]) -> bytes | None:
        path = self._path(tokens)
        try:
            raw = path.read_bytes()
        except OSError:
            return None
        if not self._header_holds(raw, tokens):  # a hash collision or a damaged file: evaluate instead
            log.warning("prefix state %s does not hold this prompt: ignored", path)
            return None
        return raw[4 + 4 * len(tokens) :]

    def holds(self, tokens: list[int]) -> bool:
        """Whether the file for these tokens is there and names them (its header only: no 29 MB read)."""
        try:
            with self._path(tokens).open("rb") as f:
                return self._header_holds(f.read(4 + 4 * len(tokens)), tokens)
        except OSError:
            return False

    @staticmethod
    def _header_holds(raw: bytes, tokens: list[int]) -> bool:
        n = int.from_bytes(raw[:4], "little")
        if n != len(tokens) or len(raw) < 4 + 4 * n:  # truncated: frombuffer would fail on a partial token
            return False
        return np.frombuffer(raw[4 : 4 + 4 * n], dtype=np.int32).tolist() == tokens

    def save(self, tokens: list[int], state: bytes) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        header = len(tokens).to_bytes(4, "little") + np.asarray(tokens, dtype=np.int32).tobytes()
        fd, tmp = tempfile.mkstemp(dir=self.folder, suffix=".part")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(header + state)
            os.replace(tmp, self._path(tokens))  # whole or not at all
        except OSError as exc:
            Path(tmp).unlink(missing_ok=True)
            log.warning("could not keep a prefix's KV state in %s: %s", self.folder, exc)
