"""The 4-bit matmul kernels on one row (decode): the float32 kernel against the int8-activation
one (`assistant.engine.tvm.int8`, engine.tvm.int8_activations), whose time includes rounding
the row. Both on one FFN matrix of the default model, with the model's thread count.
Usage: `python -m bench.kernels [--json FILE]` (x86 with AVX2 for the int8 kernel).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from assistant.engine.tvm import int8
from assistant.engine.tvm.kernels import q4_1_matmul, schedule_cpu
from assistant.engine.tvm.quant import BLOCK, Q4_1Weight, read_q4_1
from assistant.engine.tvm.target import resolve_target
from assistant.modelstore import ModelStore

MATRIX = "blk.0.ffn_up.weight"


def seconds(fn: Any, args: list[Any], repeats: int) -> float:
    fn(*args)
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn(*args)
    return (time.perf_counter() - t0) / repeats


def main() -> None:
    import tvm

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--repeats", type=int, default=500)
    args = parser.parse_args()
    store = ModelStore()
    w: Q4_1Weight = read_q4_1(store.prepare(store.get("smollm2-135m-instruct-q4_1")), [MATRIX])[MATRIX]
    out_f, in_f = w.shape
    target, dev = resolve_target("llvm"), tvm.cpu()
    x = np.random.default_rng(0).standard_normal((1, in_f)).astype(np.float32)
    reference = (x @ w.dequantize().T)[0]
    y = tvm.runtime.tensor(np.zeros((1, out_f), np.float32), dev)
    float_mod = tvm.compile(schedule_cpu(q4_1_matmul(out_f, in_f)), target=target)
    float_args = [tvm.runtime.tensor(a, dev) for a in (x, w.codes, w.scales, w.mins)] + [y]
    result: dict[str, Any] = {
        "matrix": f"{MATRIX} {out_f}x{in_f}",
        "float_ms": seconds(float_mod, float_args, args.repeats) * 1e3,
    }
    if not int8.supported(target):
        result["int8_avx2"] = "not built: needs an x86 CPU with AVX2"
    else:
        quantize = tvm.compile(tvm.IRModule({"main": int8.quantize_rows(in_f)}), target=target)
        matmul = tvm.compile(tvm.IRModule({"main": int8.q4_1_matmul_avx2(out_f, in_f)}), target=target)
        nb = in_f // BLOCK
        rounded = [tvm.runtime.tensor(np.zeros(shape, t), dev) for shape, t in
                   (((1, nb, BLOCK), np.int8), ((1, nb), np.float32), ((1, nb), np.float32))]  # fmt: skip
        weights = [tvm.runtime.tensor(a, dev) for a in (w.codes, w.scales, w.mins)]
        y8 = tvm.runtime.tensor(np.zeros((1, out_f), np.float32), dev)

        def run_int8(x: Any) -> None:
            quantize(x, *rounded)
            matmul(*rounded, *weights, y8)

        result["int8_avx2_ms"] = seconds(run_int8, [float_args[0]], args.repeats) * 1e3
        result["int8_vs_float"] = result["float_ms"] / result["int8_avx2_ms"]  # > 1: int8 is faster
        result["int8_relative_error"] = float(np.abs(y8.numpy()[0] - reference).max() / np.abs(reference).max())
    text = json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in result.items()}, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
