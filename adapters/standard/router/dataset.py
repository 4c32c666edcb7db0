"""The router adapter's data, prompt and metric (`adapters/router/dataset.py`), for the standard base.

The sentences, the held-out cases and the scoring are the same module's: only the base model and the
recipe differ, so the two profiles' router adapters are measured on one task.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

_path = Path(__file__).resolve().parents[2] / "router" / "dataset.py"
_spec = importlib.util.spec_from_file_location("adapters_router_dataset_shared", _path)
assert _spec is not None and _spec.loader is not None
_shared = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_shared)

METRIC = _shared.METRIC
train_examples = _shared.train_examples
heldout_examples = _shared.heldout_examples
predict = _shared.predict
score = _shared.score
