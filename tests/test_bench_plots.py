"""bench's pictures: drawn from results as the benchmarks write them."""

from __future__ import annotations

from pathlib import Path

from bench.plots import STAGES, speedup_by_k, voice_stages


def test_voice_turns_are_drawn_as_stacked_stages(tmp_path: Path) -> None:
    turns = [
        {"label": "local: what time is it", "breakdown": {"endpoint": 200, "asr_final": 50, "route": 1,
                                                           "first_token": 4, "first_audio": 25}},
        {"label": "llm: why is the sky blue", "breakdown": {"endpoint": 480, "asr_final": 350, "route": 490,
                                                             "first_token": 890, "first_audio": 30}},
    ]  # fmt: skip
    png = tmp_path / "voice.png"
    fig = voice_stages(turns, png)
    from matplotlib.image import imread

    assert imread(png).shape[0] > 100
    bars = [p for p in fig.axes[0].patches]
    assert len(bars) == len(turns) * len(STAGES)
    # Each turn's bars end where its whole wait ends, stage after stage.
    ends = {round(b.get_y(), 3): b.get_x() + b.get_width() for b in bars}
    assert sorted(round(e) for e in ends.values()) == [280, 2240]


def test_speculation_plot_has_the_predicted_and_measured_curves(tmp_path: Path) -> None:
    block = {"target": "qwen 1.5b", "draft": "qwen 0.5b", "predicted_by_k": {"0": 1.0, "1": 0.9, "2": 0.8},
             "measured_by_k": {"1": 0.85, "2": 0.7}}  # fmt: skip
    fig = speedup_by_k(block, tmp_path / "sd.png")
    lines = fig.axes[0].get_lines()
    data = {line.get_label(): list(line.get_ydata()) for line in lines if not line.get_label().startswith("_")}
    assert data == {"cost model (predicted)": [1.0, 0.9, 0.8], "measured (draft length fixed at k)": [0.85, 0.7]}
    assert (tmp_path / "sd.png").stat().st_size > 1000
