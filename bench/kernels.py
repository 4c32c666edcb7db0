"""4-bit matmul kernels on one row (decode), against the float32 kernel the model uses now.

`int8_avx2` is the prototype of the next decode lever (issue 7): activations rounded to int8 per
32-block as llama.cpp does, products by AVX2 `pmaddubsw` + `pmaddwd`, one float FMA per block.
It is correct (the error is the activation rounding) and 1.65-1.93x faster than the float
kernel on one FFN matrix here; the model does not use it yet.
Usage: `python -m bench.kernels [--json FILE]` (x86 with AVX2 for the prototype).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from assistant.engine.tvm.kernels import q4_1_matmul, schedule_cpu
from assistant.engine.tvm.quant import BLOCK, Q4_1Weight, read_q4_1
from assistant.engine.tvm.target import resolve_target
from assistant.modelstore import ModelStore

MATRIX = "blk.0.ffn_up.weight"
THREAD_CHUNKS = 8  # accumulators allocated once per chunk of outputs, not per output
ROWS = 4  # outputs per step: with one, loads and stack round trips made it slower than float


def int8_avx2_kernel(out_f: int, in_f: int) -> Any:
    from tvm.script import tirx as T

    nb, per_chunk, rows = in_f // BLOCK, out_f // (THREAD_CHUNKS * ROWS), ROWS
    u8, i16 = "llvm.x86.avx2.pmadd.ub.sw", "llvm.x86.avx2.pmadd.wd"

    @T.prim_func
    def kernel(
        xq_h: T.handle,
        xd_h: T.handle,
        xs_h: T.handle,
        codes_h: T.handle,
        scales_h: T.handle,
        mins_h: T.handle,
        y_h: T.handle,
    ) -> None:
        xq = T.match_buffer(xq_h, (nb, BLOCK), "int8")
        xd = T.match_buffer(xd_h, (nb,), "float32")
        xs = T.match_buffer(xs_h, (nb,), "float32")
        codes = T.match_buffer(codes_h, (out_f, nb, BLOCK // 2), "uint8")
        scales = T.match_buffer(scales_h, (out_f, nb), "float16")
        mins = T.match_buffer(mins_h, (out_f, nb), "float16")
        y = T.match_buffer(y_h, (out_f,), "float32")
        T.func_attr({"tir.noalias": True})
        for t in T.parallel(THREAD_CHUNKS):
            acc = T.decl_buffer((rows * 8,), "float32", scope="local")
            tail = T.decl_buffer((rows,), "float32", scope="local")
            for i in T.serial(per_chunk):
                for r in T.unroll(rows):
                    acc[T.ramp(r * 8, 1, 8)] = T.broadcast(T.float32(0), 8)
                    tail[r] = T.float32(0)
                for b in T.serial(nb):
                    for r in T.unroll(rows):  # `rows` outputs share each load of the block's activations
                        # One expression: let-bound vectors here became a workspace allocation each.
                        # The block's codes in element order are (low nibbles, high nibbles) of its 16 bytes.
                        acc[T.ramp(r * 8, 1, 8)] = acc[T.ramp(r * 8, 1, 8)] + T.Cast(
                            "float32x8",
                            T.call_llvm_pure_intrin(
                                "int32x8",
                                i16,
                                T.call_llvm_pure_intrin(
                                    "int16x16",
                                    u8,
                                    T.Shuffle(
                                        [
                                            T.bitwise_and(
                                                codes[(t * per_chunk + i) * rows + r, b, T.ramp(0, 1, 16)],
                                                T.broadcast(T.uint8(15), 16),
                                            ),
                                            T.shift_right(
                                                codes[(t * per_chunk + i) * rows + r, b, T.ramp(0, 1, 16)],
                                                T.broadcast(T.uint8(4), 16),
                                            ),
                                        ],
                                        list(range(BLOCK)),
                                    ),
                                    xq[b, T.ramp(0, 1, BLOCK)],
                                ),
                                T.broadcast(T.int16(1), 16),
                            ),
                        ) * T.broadcast(T.Cast("float32", scales[(t * per_chunk + i) * rows + r, b]) * xd[b], 8)
                        tail[r] = tail[r] + T.Cast("float32", mins[(t * per_chunk + i) * rows + r, b]) * xs[b]
                for r in T.unroll(rows):
                    total = acc[r * 8] + acc[r * 8 + 1] + acc[r * 8 + 2] + acc[r * 8 + 3]
                    y[(t * per_chunk + i) * rows + r] = (
                        total + acc[r * 8 + 4] + acc[r * 8 + 5] + acc[r * 8 + 6] + acc[r * 8 + 7] + tail[r]
                    )

    return kernel


def quantize_activations(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """llama.cpp's Q8_1 for one row: int8 codes, scale and scale * sum(codes) per 32-block."""
    blocks = x.reshape(-1, BLOCK)
    d = np.abs(blocks).max(axis=1) / 127
    q = np.round(blocks / np.where(d > 0, d, 1)[:, None]).astype(np.int8)
    return q, d.astype(np.float32), (d * q.sum(axis=1)).astype(np.float32)


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
    try:
        int8_mod = tvm.compile(tvm.IRModule({"main": int8_avx2_kernel(out_f, in_f)}), target=target)
    except Exception as exc:  # not an x86 LLVM target with AVX2: report, do not fail
        result["int8_avx2"] = f"not built: {str(exc).strip().splitlines()[-1]}"
    else:
        y8 = tvm.runtime.tensor(np.zeros((out_f,), np.float32), dev)
        int8_args = [tvm.runtime.tensor(a, dev) for a in (*quantize_activations(x[0]), w.codes, w.scales, w.mins)]
        int8_args.append(y8)
        result["int8_avx2_ms"] = seconds(int8_mod, int8_args, args.repeats) * 1e3
        result["int8_vs_float"] = result["float_ms"] / result["int8_avx2_ms"]  # > 1: the prototype is faster
        result["int8_relative_error"] = float(np.abs(y8.numpy() - reference).max() / np.abs(reference).max())
    text = json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in result.items()}, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
