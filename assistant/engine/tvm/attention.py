"""CPU attention over the paged KV cache, replacing TVM's stock llvm kernels.

TVM's `TIRPagedKVCache` kernels for llvm run on one thread: decode rescales the output and calls
exp twice per cached token (~18% of decode time here); prefill is scalar and visits every masked
key (60% of a 512-token prefill). These give each query head (decode) or each (query, head)
pair (prefill) to a thread of the pool and work a page (16 tokens) at a time: the scores of the
page, one rescale, then the values weighted, vectorized across the head dimension.

Same calling conventions as the stock kernels (the KV cache calls them by name), for RoPE
applied when keys are appended (`RopeMode.NORMAL`, rotary_mode 0) and no sliding window.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

PAGE = 16
LANES = 8  # float32 lanes of an AVX2 / two NEON registers


def _key_value(buf: Any, which: int, where: Any, kv_head: Any, row: Any, x: Any) -> Any:
    """A key (which=0) or value (1) element: `buf` is the page pool (`where` a page) or a ragged
    K or V array (`where` the first row of the chunk)."""
    if len(buf.shape) == 5:
        return buf[where, which, kv_head, row, x]
    return buf[where + row, kv_head, x]


def _chunk_start(table: Any, start: Any, p: Any) -> Any:
    """Chunk p of a sequence: its page (`table` the page table, `start` the sequence's offset in
    it) or, for ragged K/V (`table` None), its first row."""
    return start + p * PAGE if table is None else table[start + p]


def _attend_macro() -> Any:
    """The work of one (query, head) pair, shared by the three kernels: keys a chunk of PAGE at a
    time (their scores, one rescale, then the values weighted), vectorized across the head."""
    from tvm.script import tirx as T

    log2e = math.log2(math.e)

    @T.macro
    def attend(q, qi, h, kv_head, keys, values, table, start, seen, out, lse, sm_scale, d_head):  # type: ignore[no-untyped-def]
        with T.sblock("pair"):
            T.reads()  # declared, not inferred: the regions depend on values read inside
            T.writes()
            acc = T.sblock_alloc_buffer((d_head,), "float32")
            score = T.sblock_alloc_buffer((PAGE,), "float32")
            lanes = T.sblock_alloc_buffer((LANES,), "float32")
            state = T.sblock_alloc_buffer((3,), "float32")  # running max, denominator, chunk max
            state[0] = T.float32(-5e4)
            state[1] = T.float32(0)
            for d in T.vectorized(d_head):
                acc[d] = T.float32(0)
            for p in T.serial((seen + PAGE - 1) // PAGE):
                where: T.let[T.int32] = _chunk_start(table, start, p)
                rows: T.let[T.int32] = T.min(PAGE, seen - p * PAGE)
                state[2] = state[0]
                for r in T.serial(rows):
                    for lane in T.vectorized(LANES):
                        lanes[lane] = T.float32(0)
                    for c in T.serial(d_head // LANES):
                        for lane in T.vectorized(LANES):
                            lanes[lane] += T.cast(q[qi, h, c * LANES + lane], "float32") * T.cast(
                                _key_value(keys, 0, where, kv_head, r, c * LANES + lane), "float32"
                            )
                    score[r] = T.float32(0)
                    for lane in T.serial(LANES):
                        score[r] += lanes[lane]
                    score[r] *= sm_scale * log2e
                    state[2] = T.max(state[2], score[r])
                # One rescale per chunk of what was accumulated under the old maximum.
                scale: T.let[T.float32] = T.exp2(state[0] - state[2])
                state[1] *= scale
                for d in T.vectorized(d_head):
                    acc[d] *= scale
                state[0] = state[2]
                for r in T.serial(rows):
                    weight: T.let[T.float32] = T.exp2(score[r] - state[0])
                    state[1] += weight
                    for d in T.vectorized(d_head):
                        acc[d] += weight * T.cast(_key_value(values, 1, where, kv_head, r, d), "float32")
            for d in T.vectorized(d_head):
                out[qi, h, d] = T.cast(acc[d] / T.max(state[1], T.float32(1e-30)), out.dtype)
            lse[qi, h] = state[0] + T.log2(T.max(state[1], T.float32(1e-30)))

    return attend


def decode_attention_cpu(heads_kv: int, heads_qo: int, head_dim: int, dtype: str) -> Any:
    from tvm.script import tirx as T

    group, d_head, attend = heads_qo // heads_kv, head_dim, _attend_macro()
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
                n_pages: T.let[T.int32] = indptr[b + 1] - indptr[b]
                seen: T.let[T.int32] = T.if_then_else(n_pages > 0, (n_pages - 1) * PAGE + last_len[b], 0)
                attend(q, b, h, h // group, pages, pages, values, indptr[b], seen, out, lse, sm_scale, d_head)

    return batch_decode_paged_kv


def _visible(causal: Any, row: Any, kv_len: Any, qo_len: Any) -> Any:
    """Keys query `row` of a chunk of `qo_len` new tokens sees, of `kv_len` (TVM's causal mask)."""
    from tvm.script import tirx as T

    return T.if_then_else(causal > 0, T.min(kv_len - qo_len + row + 1, kv_len), kv_len)


def prefill_paged_attention_cpu(heads_kv: int, heads_qo: int, head_dim: int, dtype: str) -> Any:
    """Several new tokens against the paged cache (the stock kernel's calling convention): each
    (query, head) pair a task of the pool, keys a page at a time up to its causal limit. The stock
    kernel ran every pair on one thread and visited masked keys too: 60% of a 512-token prefill."""
    from tvm.script import tirx as T

    group, d_head, attend = heads_qo // heads_kv, head_dim, _attend_macro()

    @T.prim_func(s_tir=True)
    def batch_prefill_paged_kv(
        q_handle: T.handle,
        q_indptr_handle: T.handle,
        pages_handle: T.handle,
        page_indptr_handle: T.handle,
        values_handle: T.handle,
        last_len_handle: T.handle,
        k_rope_handle: T.handle,
        q_rope_handle: T.handle,
        out_handle: T.handle,
        lse_handle: T.handle,
        causal: T.int32,
        rotary_mode: T.int32,
        rope_scale: T.float32,
        rope_theta: T.float32,
        sm_scale: T.float32,
    ) -> None:
        T.func_attr({"tirx.is_scheduled": True, "global_symbol": "batch_prefill_paged_kv_cpu"})
        batch, total, nnz_pages, max_pages = T.int32(), T.int32(), T.int32(), T.int32()
        off_q, off_indptr, off_values, off_len, off_krope, off_qrope = (T.int32(), T.int32(), T.int32(),
                                                                         T.int32(), T.int32(), T.int32())  # fmt: skip
        q = T.match_buffer(q_handle, (total, heads_qo, d_head), dtype)
        q_indptr = T.match_buffer(q_indptr_handle, (batch + 1,), "int32", elem_offset=off_q)
        pages = T.match_buffer(pages_handle, (max_pages, 2, heads_kv, PAGE, d_head), dtype)
        page_indptr = T.match_buffer(page_indptr_handle, (batch + 1,), "int32", elem_offset=off_indptr)
        values = T.match_buffer(values_handle, (nnz_pages,), "int32", elem_offset=off_values)
        last_len = T.match_buffer(last_len_handle, (batch,), "int32", elem_offset=off_len)
        T.match_buffer(k_rope_handle, (batch,), "int32", elem_offset=off_krope)
        T.match_buffer(q_rope_handle, (total,), "int32", elem_offset=off_qrope)
        out = T.match_buffer(out_handle, (total, heads_qo, d_head), dtype)
        lse = T.match_buffer(lse_handle, (total, heads_qo), "float32")
        assert rotary_mode == 0, "prefill_paged_attention_cpu expects RoPE applied when keys are appended"
        for b in T.serial(batch):
            for t in T.parallel((q_indptr[b + 1] - q_indptr[b]) * heads_qo):
                n_pages: T.let[T.int32] = page_indptr[b + 1] - page_indptr[b]
                kv_len: T.let[T.int32] = T.if_then_else(n_pages > 0, (n_pages - 1) * PAGE + last_len[b], 0)
                seen: T.let[T.int32] = _visible(causal, t // heads_qo, kv_len, q_indptr[b + 1] - q_indptr[b])
                attend(q, q_indptr[b] + t // heads_qo, t % heads_qo, t % heads_qo // group, pages, pages, values,
                       page_indptr[b], seen, out, lse, sm_scale, d_head)  # fmt: skip

    return batch_prefill_paged_kv


def prefill_ragged_attention_cpu(heads_kv: int, heads_qo: int, head_dim: int, dtype: str) -> Any:
    """The new tokens of a chunk against themselves (keys and values not yet paged), same scheme."""
    from tvm.script import tirx as T

    group, d_head, attend = heads_qo // heads_kv, head_dim, _attend_macro()

    @T.prim_func(s_tir=True)
    def batch_prefill_ragged_kv(
        q_handle: T.handle,
        q_indptr_handle: T.handle,
        k_handle: T.handle,
        v_handle: T.handle,
        kv_indptr_handle: T.handle,
        q_rope_handle: T.handle,
        k_rope_handle: T.handle,
        out_handle: T.handle,
        lse_handle: T.handle,
        causal: T.int32,
        rotary_mode: T.int32,
        rope_scale: T.float32,
        rope_theta: T.float32,
        sm_scale: T.float32,
    ) -> None:
        T.func_attr({"tirx.is_scheduled": True, "global_symbol": "batch_prefill_ragged_kv_cpu"})
        batch, qo_total, kv_total = T.int32(), T.int32(), T.int32()
        off_q, off_kv, off_qrope, off_krope = T.int32(), T.int32(), T.int32(), T.int32()
        q = T.match_buffer(q_handle, (qo_total, heads_qo, d_head), dtype)
        q_indptr = T.match_buffer(q_indptr_handle, (batch + 1,), "int32", elem_offset=off_q)
        k = T.match_buffer(k_handle, (kv_total, heads_kv, d_head), dtype)
        v = T.match_buffer(v_handle, (kv_total, heads_kv, d_head), dtype)
        kv_indptr = T.match_buffer(kv_indptr_handle, (batch + 1,), "int32", elem_offset=off_kv)
        T.match_buffer(q_rope_handle, (qo_total,), "int32", elem_offset=off_qrope)
        T.match_buffer(k_rope_handle, (batch,), "int32", elem_offset=off_krope)
        out = T.match_buffer(out_handle, (qo_total, heads_qo, d_head), dtype)
        lse = T.match_buffer(lse_handle, (qo_total, heads_qo), "float32")
        assert rotary_mode == 0, "prefill_ragged_attention_cpu expects RoPE applied before attention"
        for b in T.serial(batch):
            for t in T.parallel((q_indptr[b + 1] - q_indptr[b]) * heads_qo):
                kv_len: T.let[T.int32] = kv_indptr[b + 1] - kv_indptr[b]
                seen: T.let[T.int32] = _visible(causal, t // heads_qo, kv_len, q_indptr[b + 1] - q_indptr[b])
                attend(q, q_indptr[b] + t // heads_qo, t % heads_qo, t % heads_qo // group, k, v, None,
                       kv_indptr[b], seen, out, lse, sm_scale, d_head)  # fmt: skip

    return batch_prefill_ragged_kv


@contextmanager
def cpu_attention_kernels() -> Iterator[None]:
    """While building a CPU model: the KV cache takes this module's kernels for decode and for
    prefill (paged and ragged); sliding-window variants stay TVM's."""
    from tvm.relax.frontend.nn.llm import kv_cache

    stock = (kv_cache._attention_decode_cpu, kv_cache._attention_prefill_cpu, kv_cache._attention_prefill_ragged_cpu)
    stock_decode, stock_prefill, _ = stock

    def decode(heads_kv: int, heads_qo: int, head_dim: int, dtype: str, sliding_window: bool, *rest: Any) -> Any:
        if sliding_window:
            return stock_decode(heads_kv, heads_qo, head_dim, dtype, sliding_window, *rest)
        return decode_attention_cpu(heads_kv, heads_qo, head_dim, dtype)

    def prefill(heads_kv: int, heads_qo: int, head_dim: int, dtype: str, sliding_window: bool, *rest: Any,
                **kw: Any) -> Any:  # fmt: skip
        if sliding_window:
            return stock_prefill(heads_kv, heads_qo, head_dim, dtype, sliding_window, *rest, **kw)
        return prefill_paged_attention_cpu(heads_kv, heads_qo, head_dim, dtype)

    def ragged(heads_kv: int, heads_qo: int, d_qk: int, d_v: int, dtype: str, *rest: Any) -> Any:
        if d_qk != d_v:
            raise ValueError(f"prefill_ragged_attention_cpu needs equal q/k and v head sizes, not {d_qk} and {d_v}")
        return prefill_ragged_attention_cpu(heads_kv, heads_qo, d_qk, dtype)

    kv_cache._attention_decode_cpu, kv_cache._attention_prefill_cpu = decode, prefill
    kv_cache._attention_prefill_ragged_cpu = ragged
    try:
        yield
    finally:
        kv_cache._attention_decode_cpu, kv_cache._attention_prefill_cpu, kv_cache._attention_prefill_ragged_cpu = stock
