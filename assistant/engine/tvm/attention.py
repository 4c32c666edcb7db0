"""CPU attention for one new token over the paged KV cache, replacing TVM's stock kernel.

TVM's `TIRPagedKVCache` decode kernel for llvm runs every head on one thread and rescales the
output and calls exp twice per cached token; it was ~18% of decode time here. This one gives
each query head to a thread of the pool and works a page (16 tokens) at a time: the scores of
the page, one rescale, then the values weighted, vectorized across the head dimension.

Same calling convention as the stock kernel (the KV cache calls it by name), for RoPE applied
when keys are appended (`RopeMode.NORMAL`, rotary_mode 0) and no sliding window.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

PAGE = 16
LANES = 8  # float32 lanes of an AVX2 / two NEON registers


def decode_attention_cpu(heads_kv: int, heads_qo: int, head_dim: int, dtype: str) -> Any:
    from tvm.script import tirx as T

    group, d_head, log2e = heads_qo // heads_kv, head_dim, math.log2(math.e)
    if head_dim % LANES:
        raise ValueError(f"head_dim {head_dim} is not a multiple of {LANES}")

    @T.prim_func(s_tir=True)
    def batch_decode_paged_kv(
        q_handle: T.handle,
        pages_handle: T.handle,
        indptr_handle: T.handle,
        values_handle: T.handle,
        last_len_handle: T.handle,
        k_rope_handle: T.handle,
        q_rope_handle: T.handle,
        out_handle: T.handle,
        lse_handle: T.handle,
        rotary_mode: T.int32,
        rope_scale: T.float32,
        rope_theta: T.float32,
        sm_scale: T.float32,
    ) -> None:
        T.func_attr({"tirx.is_scheduled": True, "global_symbol": "batch_decode_paged_kv_cpu"})
        batch, nnz_pages, max_pages = T.int32(), T.int32(), T.int32()
        off_indptr, off_values, off_len, off_krope, off_qrope = T.int32(), T.int32(), T.int32(), T.int32(), T.int32()
        q = T.match_buffer(q_handle, (batch, heads_qo, d_head), dtype)
        pages = T.match_buffer(pages_handle, (max_pages, 2, heads_kv, PAGE, d_head), dtype)
        indptr = T.match_buffer(indptr_handle, (batch + 1,), "int32", elem_offset=off_indptr)
        values = T.match_buffer(values_handle, (nnz_pages,), "int32", elem_offset=off_values)
        last_len = T.match_buffer(last_len_handle, (batch,), "int32", elem_offset=off_len)
        T.match_buffer(k_rope_handle, (batch,), "int32", elem_offset=off_krope)
        T.match_buffer(q_rope_handle, (batch,), "int32", elem_offset=off_qrope)
        out = T.match_buffer(out_handle, (batch, heads_qo, d_head), dtype)
        lse = T.match_buffer(lse_handle, (batch, heads_qo), "float32")
        assert rotary_mode == 0, "decode_attention_cpu expects RoPE applied when keys are appended"
        for b in T.serial(batch):
            for h in T.parallel(heads_qo):
                with T.sblock("head"):
                    T.reads()  # declared, not inferred: the regions depend on values read inside
                    T.writes()
                    acc = T.sblock_alloc_buffer((d_head,), "float32")
                    score = T.sblock_alloc_buffer((PAGE,), "float32")
                    lanes = T.sblock_alloc_buffer((LANES,), "float32")
                    state = T.sblock_alloc_buffer((3,), "float32")  # running max, denominator, page max
                    kv = h // group
                    n_pages: T.let[T.int32] = indptr[b + 1] - indptr[b]
                    state[0] = T.float32(-5e4)
                    state[1] = T.float32(0)
                    for d in T.vectorized(d_head):
                        acc[d] = T.float32(0)
                    for p in T.serial(n_pages):
                        page: T.let[T.int32] = values[indptr[b] + p]
                        rows: T.let[T.int32] = T.if_then_else(p == n_pages - 1, last_len[b], PAGE)
                        state[2] = state[0]
                        for r in T.serial(rows):
                            # q . k as 8 vector lanes of partial sums, then the lanes added.
                            for lane in T.vectorized(LANES):
                                lanes[lane] = T.float32(0)
                            for c in T.serial(d_head // LANES):
                                for lane in T.vectorized(LANES):
                                    lanes[lane] += T.cast(q[b, h, c * LANES + lane], "float32") * T.cast(
                                        pages[page, 0, kv, r, c * LANES + lane], "float32"
                                    )
                            score[r] = T.float32(0)
                            for lane in T.serial(LANES):
                                score[r] += lanes[lane]
                            score[r] *= sm_scale * log2e
                            state[2] = T.max(state[2], score[r])
                        # One rescale per page of what was accumulated under the old maximum.
                        scale: T.let[T.float32] = T.exp2(state[0] - state[2])
                        state[1] *= scale
                        for d in T.vectorized(d_head):
                            acc[d] *= scale
                        state[0] = state[2]
                        for r in T.serial(rows):
                            weight: T.let[T.float32] = T.exp2(score[r] - state[0])
                            state[1] += weight
                            for d in T.vectorized(d_head):
                                acc[d] += weight * T.cast(pages[page, 1, kv, r, d], "float32")
                    for d in T.vectorized(d_head):
                        out[b, h, d] = T.cast(acc[d] / T.max(state[1], T.float32(1e-30)), dtype)
                    lse[b, h] = state[0] + T.log2(T.max(state[1], T.float32(1e-30)))

    return batch_decode_paged_kv


@contextmanager
def cpu_decode_kernel() -> Iterator[None]:
    """While building a CPU model: the KV cache takes `decode_attention_cpu` for its decode kernel."""
    from tvm.relax.frontend.nn.llm import kv_cache

    stock = kv_cache._attention_decode_cpu

    def ours(heads_kv: int, heads_qo: int, head_dim: int, dtype: str, sliding_window: bool, *_: Any) -> Any:
        if sliding_window:
            return stock(heads_kv, heads_qo, head_dim, dtype, sliding_window, *_)
        return decode_attention_cpu(heads_kv, heads_qo, head_dim, dtype)

    kv_cache._attention_decode_cpu = ours
    try:
        yield
    finally:
        kv_cache._attention_decode_cpu = stock
