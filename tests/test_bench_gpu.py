"""`python -m bench.gpu`: the GPU check of the whole project in one command; CI runs its dry mode on the CPU."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from .conftest import ROOT


def test_the_gpu_bench_runs_every_step_in_its_dry_mode(tmp_path: Path) -> None:
    out = tmp_path / "gpu.json"
    run = subprocess.run([sys.executable, "-m", "bench.gpu", "--dry", "--json", str(out)], cwd=ROOT,
                         capture_output=True, text=True, timeout=600)  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    results = json.loads(out.read_text())
    ll = results["llama_cpp"]
    assert results["dry"] and ll["gpu_layers"] == 0 and results["tvm_cuda"] is None
    assert ll["decode_tok_s"] > 0 and set(ll["prefill_tok_s"]) == {"16", "32", "64"}
    assert set(ll["verify_ms"]) == {"1", "2", "4", "8"} and all(v > 0 for v in ll["verify_ms"].values())
    assert ll["parity"]["partings"] == []  # the same CPU build on both sides: greedy is identical
    assert ll["parity"]["max_logit_diff_after_prompt"] == 0.0
    assert ll["lora_changes_output"] and ll["speculation"]["identical_to_greedy"]  # bit-identical on the CPU
    assert "verify ms (k=8)" in run.stdout and "speculation = greedy" in run.stdout
