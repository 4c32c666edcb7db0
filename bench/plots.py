"""Pictures of benchmark results (matplotlib, written as PNG; the `test` and `bench` extras install it).

- `voice_stages`: bench.voice's turns as stacked bars, one per turn, one colour per stage from the end
  of speech to the first audio, so where a slow turn lost its time shows at a glance.
- `speedup_by_k`: bench.engine's speculation block, the cost model's predicted speedup against the one
  measured with the draft length fixed at each k.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

STAGES = ("endpoint", "asr_final", "route", "first_token", "first_audio")
LABELS = {
    "endpoint": "end of speech detected",
    "asr_final": "final transcript",
    "route": "routed",
    "first_token": "first sentence generated",
    "first_audio": "first audio out",
}


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on a device or in CI
    import matplotlib.pyplot as plt

    return plt


def voice_stages(turns: Sequence[Mapping[str, Any]], path: Path, *, title: str = "") -> Any:
    """Turns are {"label": str, "breakdown": {stage: ms}}; returns the figure (its bars are checked in tests)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(9, 0.35 * len(turns) + 1.6))
    labels = [str(t["label"]) for t in turns]
    left = [0.0] * len(turns)
    for stage in STAGES:
        widths = [float(t["breakdown"].get(stage, 0.0)) for t in turns]
        ax.barh(labels, widths, left=left, label=LABELS[stage])
        left = [a + b for a, b in zip(left, widths, strict=True)]
    ax.invert_yaxis()  # the first turn on top
    ax.set_xlabel("ms after the end of speech")
    ax.set_title(title or "Voice turns: where the wait goes")
    ax.legend(loc="lower right", fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return fig


def speedup_by_k(block: Mapping[str, Any], path: Path, *, title: str = "") -> Any:
    """`block` is bench.engine's speculation block: `predicted_by_k` and `measured_by_k` ({k: speedup})."""
    plt = _pyplot()
    predicted = {int(k): float(v) for k, v in block["predicted_by_k"].items()}
    measured = {int(k): float(v) for k, v in block.get("measured_by_k", {}).items()}
    fig, ax = plt.subplots(figsize=(6.5, 4))
    ks = sorted(predicted)
    ax.plot(ks, [predicted[k] for k in ks], marker="o", label="cost model (predicted)")
    if measured:
        mk = sorted(measured)
        ax.plot(mk, [measured[k] for k in mk], marker="s", label="measured (draft length fixed at k)")
    ax.axhline(1.0, color="grey", linewidth=0.8, linestyle="--")
    ax.set_xlabel("draft tokens per step (k; 0 = plain decoding)")
    ax.set_ylabel("decode speed / plain decode")
    default = f"Speculation: target {block.get('target', '')}\ndraft {block.get('draft', '')}"
    ax.set_title(title or default, fontsize="small")
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return fig
