"""How every benchmark reports: JSON on stdout, and the same JSON in a file if asked."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def percentile(values: list[float], q: float) -> float | None:
    """The value below which a fraction q of `values` lies (nearest rank); None for no values."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else None


def emit(results: dict[str, Any], path: Path | None) -> None:
    rounded = {k: round(v, 3) if isinstance(v, float) else v for k, v in results.items()}
    text = json.dumps(rounded, indent=2)
    print(text)
    if path is not None:
        path.write_text(text + "\n")
