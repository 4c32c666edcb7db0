"""Model manifests and the verified files behind them."""

from assistant.modelstore.manifest import ManifestError, ModelManifest, load_manifest
from assistant.modelstore.store import (
    ModelCorrupt,
    ModelError,
    ModelMissing,
    ModelNotFound,
    ModelStatus,
    ModelStore,
    Quantizer,
    Reporter,
)

__all__ = [
    "ManifestError",
    "ModelCorrupt",
    "ModelError",
    "ModelManifest",
    "ModelMissing",
    "ModelNotFound",
    "ModelStatus",
    "ModelStore",
    "Quantizer",
    "Reporter",
    "load_manifest",
]
