"""Integer dot products for the 4-bit matmuls on x86 CPUs with AVX2, as llama.cpp computes them.

Each matmul input row is rounded to int8 per 32-block (llama.cpp's Q8_1: codes, scale `d` and
`d * sum(codes)`); a Q4_1 block's contribution is then `scale * d * dot(codes4, codes8) +
min * d * sum(codes8)`, with the integer dot done by `pmaddubsw` + `pmaddwd` (32 byte products
per two instructions) and one float multiply-add per block. The float kernel spends a nibble
decode and an FMA per weight instead. Measured on one FFN matrix of the default model
(`python -m bench.kernels`, rounding included): 1.6x faster than the float kernel; relative
error 0.0046, the activation rounding, the same llama.cpp makes.

Every row goes through the same per-row arithmetic whatever the row count, so decode (one row)
and prefill/verify (many) give bit-identical matmul results. The rounding still amplifies the
1e-5 difference between TVM's one-token and several-token attention paths, so greedy
speculation on such a build is not bit-exact (`engine.tvm.int8_activations` is off by default).
"""

from __future__ import annotations

from typing import Any

from assistant.engine.tvm.quant import BLOCK

ROWS = 4  # outputs per step sharing each load of a block's activations (one alone was slower than float)
CHUNKS = 32  # parallel tasks per matmul, each with its accumulators allocated once
FEATURES = ("avx2",)


def supported(target: Any) -> bool:
    """Whether `target` (an llvm target) can run these kernels: x86 with AVX2."""
    from tvm.target import codegen

    if target.kind.name != "llvm" or "x86_64" not in str(codegen.llvm_get_system_triple()):
        return False
    return bool(codegen.llvm_cpu_has_features(list(FEATURES), target))


def fits(out_features: int, in_features: int) -> bool:
    return out_features % ROWS == 0 and in_features % BLOCK == 0


def quantize_rows(in_features: int) -> Any:
    """PrimFunc x[n, in] float32 -> (codes int8 [n, in/32, 32], d [n, in/32], d * sum(codes) [n, in/32]).

    d = max|x| / 127 per block; codes = round(x / d), ties to even as in llama.cpp's AVX2 path.
    Rows in parallel, the codes of a block as one vector.
    """
    from tvm.script import tirx as T

    nb = in_features // BLOCK

    @T.prim_func(s_tir=True)
    def quantize(x_h: T.handle, q_h: T.handle, d_h: T.handle, ds_h: T.handle) -> None:
        n = T.int64()
        x = T.match_buffer(x_h, (n, in_features), "float32")
        q = T.match_buffer(q_h, (n, nb, BLOCK), "int8")
        d = T.match_buffer(d_h, (n, nb), "float32")
        ds = T.match_buffer(ds_h, (n, nb), "float32")
        T.func_attr({"tirx.noalias": True})
        for row in T.parallel(n):
            with T.sblock("row"):
                T.reads()
                T.writes()
                amax = T.sblock_alloc_buffer((1,), "float32")
                total = T.sblock_alloc_buffer((1,), "int32")
                for b in T.serial(nb):
                    amax[0] = T.float32(0)
                    for j in T.serial(BLOCK):
                        amax[0] = T.max(amax[0], T.fabs(x[row, b * BLOCK + j]))
                    for j in T.vectorized(BLOCK):
                        q[row, b, j] = T.Cast(
                            "int8",
                            T.round(
                                x[row, b * BLOCK + j]
                                * T.if_then_else(amax[0] > 0, T.float32(127) / amax[0], T.float32(0))
                            ),
                        )
                    total[0] = 0
                    for j in T.serial(BLOCK):
                        total[0] = total[0] + T.Cast("int32", q[row, b, j])
                    d[row, b] = amax[0] / T.float32(127)
                    ds[row, b] = d[row, b] * T.Cast("float32", total[0])

    return quantize


def _block_dot(code_bytes: Any, activations: Any) -> Any:
    """float32x8 lanes summing to dot(4-bit codes, int8 activations) of one 32-block.

    The 16 code bytes in element order are (low nibbles, high nibbles): one shuffle, then
    `pmaddubsw` (unsigned codes x signed activations, pairs summed to int16; at most 2 * 15 * 127,
    no saturation) and `pmaddwd` against ones (pairs summed to int32).
    """
    from tvm.script import tirx as T

    half = BLOCK // 2
    nibbles = T.Shuffle(
        [
            T.bitwise_and(code_bytes, T.broadcast(T.uint8(15), half)),
            T.shift_right(code_bytes, T.broadcast(T.uint8(4), half)),
        ],
        list(range(BLOCK)),
    )
    pairs = T.call_llvm_pure_intrin("int16x16", "llvm.x86.avx2.pmadd.ub.sw", nibbles, activations)
    quads = T.call_llvm_pure_intrin("int32x8", "llvm.x86.avx2.pmadd.wd", pairs, T.broadcast(T.int16(1), half))
    return T.Cast("float32x8", quads)


def q4_1_matmul_avx2(out_features: int, in_features: int) -> Any:
    """PrimFunc (xq, d, ds from `quantize_rows`; codes, scales, mins of a Q4_1 matrix) -> y[n, out].

    Parallel over chunks of output groups; per group of `ROWS` outputs and per row, the blocks in
    order, each block's activations loaded once for the group. A row's result does not depend on
    the row count, so decode and prefill/verify agree bit for bit. (Tiles of 2-4 rows sharing
    each unpacked block measured no faster: LLVM keeps the accumulators in memory either way.)
    """
    from tvm.script import tirx as T

    if not fits(out_features, in_features):
        raise ValueError(f"{out_features}x{in_features}: needs out % {ROWS} == 0 and in % {BLOCK} == 0")
    nb, groups = in_features // BLOCK, out_features // ROWS
    per_chunk = -(-groups // CHUNKS)
    chunks = -(-groups // per_chunk)
    rows, half = ROWS, BLOCK // 2

    @T.prim_func(s_tir=True)
    def kernel(
        xq_h: T.handle,
        xd_h: T.handle,
        xs_h: T.handle,
        codes_h: T.handle,
        scales_h: T.handle,
        mins_h: T.handle,
        y_h: T.handle,
    ) -> None:
        n = T.int64()
        xq = T.match_buffer(xq_h, (n, nb, BLOCK), "int8")
        xd = T.match_buffer(xd_h, (n, nb), "float32")
        xs = T.match_buffer(xs_h, (n, nb), "float32")
        codes = T.match_buffer(codes_h, (out_features, nb, half), "uint8")
        scales = T.match_buffer(scales_h, (out_features, nb), "float16")
        mins = T.match_buffer(mins_h, (out_features, nb), "float16")
        y = T.match_buffer(y_h, (n, out_features), "float32")
        T.func_attr({"tirx.noalias": True})
        for t in T.parallel(chunks):
            with T.sblock("chunk"):
                T.reads()
                T.writes()
                acc = T.sblock_alloc_buffer((rows * 8,), "float32")
                tail = T.sblock_alloc_buffer((rows,), "float32")
                for i in T.serial(per_chunk):
                    if t * per_chunk + i < groups:
                        for row in T.serial(n):
                            for r in T.unroll(rows):
                                acc[T.ramp(r * 8, 1, 8)] = T.broadcast(T.float32(0), 8)
                                tail[r] = T.float32(0)
                            for b in T.serial(nb):
                                for r in T.unroll(rows):  # one expression: let-bound vectors became allocations
                                    acc[T.ramp(r * 8, 1, 8)] = acc[T.ramp(r * 8, 1, 8)] + _block_dot(
                                        codes[(t * per_chunk + i) * rows + r, b, T.ramp(0, 1, half)],
                                        xq[row, b, T.ramp(0, 1, BLOCK)],
                                    ) * T.broadcast(
                                        T.Cast("float32", scales[(t * per_chunk + i) * rows + r, b]) * xd[row, b], 8
                                    )
                                    tail[r] = (
                                        tail[r]
                                        + T.Cast("float32", mins[(t * per_chunk + i) * rows + r, b]) * xs[row, b]
                                    )
                            for r in T.unroll(rows):
                                y[row, (t * per_chunk + i) * rows + r] = (
                                    acc[r * 8]
                                    + acc[r * 8 + 1]
                                    + acc[r * 8 + 2]
                                    + acc[r * 8 + 3]
                                    + acc[r * 8 + 4]
                                    + acc[r * 8 + 5]
                                    + acc[r * 8 + 6]
                                    + acc[r * 8 + 7]
                                    + tail[r]
                                )

    return kernel
