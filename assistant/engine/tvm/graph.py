"""The Llama graph in `tvm.relax.frontend.nn`, its layers as modules (MLC-LLM's `*_model.py`).

Matrices stay 4-bit (GGUF Q4_1, dequantized inside `kernels.q4_1_matmul`); the tied embedding /
output head stays Q8_0 (dequantized inside its gather and its matmul). Attention runs on TVM's
paged KV cache (`TIRPagedKVCache`, the one MLC-LLM uses), which applies RoPE in the rotate-half
convention (`weights.load_weights` puts GGUF's interleaved Q and K rows in that order).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

from tvm import relax, te, tirx
from tvm.relax.frontend import nn
from tvm.relax.frontend.nn import Tensor, op
from tvm.relax.frontend.nn.llm.kv_cache import PagedKVCache, RopeMode, TIRPagedKVCache

from assistant.engine.tvm import int8
from assistant.engine.tvm.attention import cpu_attention_kernels
from assistant.engine.tvm.kernels import lora_matmul, q4_1_matmul, q8_0_matmul, schedule_cpu, schedule_gpu
from assistant.engine.tvm.quant import BLOCK
from assistant.engine.tvm.target import TargetKind, resolve_target
from assistant.engine.tvm.weights import LORA_RANK, LORA_SLOTS, LlamaShape
from assistant.engine.types import EngineError


class Kernels:
    """The TIR kernels of one build, with its device's schedules: each built once, by symbol, and
    shared by the entry points."""

    def __init__(self, kind: TargetKind, int8_activations: bool) -> None:
        self.kind, self.int8_activations = kind, int8_activations
        # Kernels for one row (decode) or many (prefill, verify): chosen while each entry point is traced.
        self.tracing_one_row = False
        self.funcs: dict[str, Any] = {}  # by symbol

    @contextmanager
    def one_row(self) -> Iterator[None]:
        self.tracing_one_row = True
        try:
            yield
        finally:
            self.tracing_one_row = False

    def cached(self, symbol: str, make: Callable[[], Any], scheduled: bool) -> Any:
        if symbol not in self.funcs:
            attrs: dict[str, Any] = {"global_symbol": symbol}
            if scheduled:  # the GPU pipeline's default schedules (dlight) and fusion leave it as it is
                attrs |= {"tirx.is_scheduled": True, "op_pattern": 8}  # kOpaque
            self.funcs[symbol] = make().with_attrs(attrs)
        return self.funcs[symbol]

    def kernel(self, make: Any, out_f: int, in_f: int, name: str) -> Any:
        """A TE kernel with this device's schedule (`kernels.schedule_cpu` / `schedule_gpu`)."""
        one, kind = self.tracing_one_row, self.kind

        def scheduled() -> Any:
            func = make(out_f, in_f)
            return (schedule_gpu(func) if kind != "llvm" else schedule_cpu(func, many_rows=not one))["main"]

        return self.cached(f"{name}_{out_f}x{in_f}_{'one' if one else 'rows'}", scheduled, kind != "llvm")

    def q4_matmul(self, rows: Tensor, w: Q4Linear) -> Tensor:
        n, out_f, in_f = rows.shape[0], w.out_f, w.in_f
        if not (self.int8_activations and int8.fits(out_f, in_f)):
            func = self.kernel(q4_1_matmul, out_f, in_f, "q4_matmul")
            return op.tensor_ir_op(func, "q4_matmul", [rows, w.codes, w.scales, w.mins],
                                   Tensor.placeholder((n, out_f), "float32"))  # fmt: skip
        nb = in_f // BLOCK
        quantize = self.cached(f"q8_rows_{in_f}", lambda: int8.quantize_rows(in_f), scheduled=True)
        outs = [Tensor.placeholder((n, nb, BLOCK), "int8")] + [Tensor.placeholder((n, nb), "float32")] * 2
        xq, xd, xs = op.tensor_ir_op(quantize, "q8_rows", [rows], outs)
        func = self.cached(f"q4_int8_{out_f}x{in_f}", lambda: int8.q4_1_matmul_avx2(out_f, in_f), scheduled=True)
        return op.tensor_ir_op(func, "q4_int8", [xq, xd, xs, w.codes, w.scales, w.mins],
                               Tensor.placeholder((n, out_f), "float32"))  # fmt: skip

    def lora_factor(self, x: Tensor, stacked: Tensor, slot: Tensor, out_f: int, in_f: int) -> Tensor:
        func = self.kernel(lambda o, i: lora_matmul(o, i, LORA_SLOTS), out_f, in_f, "lora_matmul")
        return op.tensor_ir_op(
            func, "lora_matmul", [x, stacked, slot], Tensor.placeholder((x.shape[0], out_f), "float32")
        )


def take_slot(stacked: Tensor, slot: Tensor) -> Tensor:
    # "clip", not the default "fast" (which warns at every build): the runtime checks slots anyway.
    return nn.wrap_nested(relax.op.take(stacked._expr, slot._expr, axis=0, mode="clip"), name="lora_slot")


class Q4Linear(nn.Module):  # type: ignore[misc]
    def __init__(self, kernels: Kernels, in_f: int, out_f: int, lora_rank: int = 0, bias: bool = False):
        self.kernels = kernels
        self.in_f, self.out_f, self.lora_rank = in_f, out_f, lora_rank
        self.codes = nn.Parameter((out_f, in_f // BLOCK, BLOCK // 2), "uint8")
        self.scales = nn.Parameter((out_f, in_f // BLOCK), "float16")
        self.mins = nn.Parameter((out_f, in_f // BLOCK), "float16")
        self.bias = nn.Parameter((out_f,), "float32") if bias else None
        if lora_rank:
            self.lora_a = nn.Parameter((LORA_SLOTS, lora_rank, in_f), "float32")
            self.lora_b = nn.Parameter((LORA_SLOTS, out_f, lora_rank), "float32")

    def forward(self, x: Tensor, slot: Tensor | None = None) -> Tensor:
        b, n, _ = x.shape
        rows = op.reshape(x, (b * n, self.in_f))
        y = self.kernels.q4_matmul(rows, self)
        if self.bias is not None:
            y = y + self.bias
        if self.lora_rank and slot is not None:
            if self.kernels.kind == "llvm":  # scheduled, in place: the default lowering cost 15% of decode
                low = self.kernels.lora_factor(rows, self.lora_a, slot, self.lora_rank, self.in_f)
                y = y + self.kernels.lora_factor(low, self.lora_b, slot, self.out_f, self.lora_rank)
            else:  # the GPU pipeline's default schedules handle these
                a = op.reshape(take_slot(self.lora_a, slot), (self.lora_rank, self.in_f))
                bb = op.reshape(take_slot(self.lora_b, slot), (self.out_f, self.lora_rank))
                low = op.matmul(rows, op.permute_dims(a, [1, 0]))
                y = y + op.matmul(low, op.permute_dims(bb, [1, 0]))
        return op.reshape(y, (b, n, self.out_f))


class Q8Table(nn.Module):  # type: ignore[misc]
    """The tied embedding and output head, Q8_0: weight = int8 code * float16 scale per 32."""

    def __init__(self, kernels: Kernels, vocab: int, hidden: int) -> None:
        self.kernels, self.vocab, self.hidden = kernels, vocab, hidden
        self.codes = nn.Parameter((vocab, hidden // BLOCK, BLOCK), "int8")
        self.scales = nn.Parameter((vocab, hidden // BLOCK), "float16")

    def take(self, ids: Tensor) -> Tensor:
        def f(ids: Any, codes: Any, scales: Any) -> Any:
            return te.compute(
                (ids.shape[0], self.hidden),
                lambda i, j: (
                    codes[ids[i], j // BLOCK, j % BLOCK].astype("float32")
                    * scales[ids[i], j // BLOCK].astype("float32")
                ),
                name="q8_take",
            )

        return op.tensor_expr_op(f, "q8_take", [ids, self.codes, self.scales])

    def logits(self, x: Tensor) -> Tensor:
        """(1, n, hidden) -> (1, n, vocab)."""
        n = x.shape[1]
        rows = op.reshape(x, (n, self.hidden))
        func = self.kernels.kernel(q8_0_matmul, self.vocab, self.hidden, "q8_head")
        y = op.tensor_ir_op(func, "q8_head", [rows, self.codes, self.scales],
                            Tensor.placeholder((n, self.vocab), "float32"))  # fmt: skip
        return op.reshape(y, (1, n, self.vocab))


class Layer(nn.Module):  # type: ignore[misc]
    def __init__(self, s: LlamaShape, kernels: Kernels) -> None:
        self.s, d = s, s.head_dim
        self.qkv = Q4Linear(kernels, s.hidden, (s.heads + 2 * s.kv_heads) * d, 3 * LORA_RANK, bias=s.qkv_bias)
        self.o = Q4Linear(kernels, s.heads * d, s.hidden, LORA_RANK)
        self.gate_up = Q4Linear(kernels, s.hidden, 2 * s.ffn)
        self.down = Q4Linear(kernels, s.ffn, s.hidden)
        self.attn_norm = nn.RMSNorm(s.hidden, -1, s.eps, bias=False)
        self.ffn_norm = nn.RMSNorm(s.hidden, -1, s.eps, bias=False)

    def forward(self, x: Tensor, cache: PagedKVCache, layer: int, slot: Tensor | None) -> Tensor:
        s = self.s
        b, n, _ = x.shape
        h = self.attn_norm(x)
        qkv = op.reshape(self.qkv(h, slot), (b, n, s.heads + 2 * s.kv_heads, s.head_dim))
        attn = cache.attention_with_fused_qkv(layer, qkv, s.heads, sm_scale=s.head_dim**-0.5)
        x = x + self.o(op.reshape(attn, (b, n, s.heads * s.head_dim)), slot)
        gate, up = op.split(self.gate_up(self.ffn_norm(x)), 2, axis=-1)
        return x + self.down(op.silu(gate) * up)


class Llama(nn.Module):  # type: ignore[misc]
    """The model: parameter names are attribute paths, as `weights.load_weights` produces them."""

    def __init__(self, s: LlamaShape, kernels: Kernels, target: Any) -> None:
        self.s, self.kernels, self.target = s, kernels, target
        self.embed = Q8Table(kernels, s.vocab, s.hidden)
        if not s.tied:
            self.head = Q8Table(kernels, s.vocab, s.hidden)  # an untied output head: its own Q8_0 table
        self.layers = nn.ModuleList([Layer(s, kernels) for _ in range(s.layers)])
        self.norm = nn.RMSNorm(s.hidden, -1, s.eps, bias=False)

    def _body(self, x: Tensor, cache: PagedKVCache, slot: Tensor | None) -> Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x, cache, i, slot)
        return self.norm(x)

    def _logits(self, x: Tensor) -> Tensor:
        return (self.embed if self.s.tied else self.head).logits(x)

    def _embed(self, ids: Tensor) -> Tensor:
        return op.reshape(self.embed.take(ids), (1, ids.shape[0], self.s.hidden))

    def _prefill(self, ids: Tensor, slot: Tensor | None, cache: PagedKVCache) -> tuple[Tensor, PagedKVCache]:
        h = self._body(self._embed(ids), cache, slot)

        def last(h: Any) -> Any:
            return te.compute((1, 1, self.s.hidden), lambda a, b, k: h[a, h.shape[1] - 1, k], name="last_row")

        with self.kernels.one_row():  # the head sees the last row only
            return self._logits(op.tensor_expr_op(last, "last_row", [h])), cache

    def _verify(self, ids: Tensor, slot: Tensor | None, cache: PagedKVCache) -> tuple[Tensor, PagedKVCache]:
        """Logits at every position of `ids` (checking a draft's proposals in one pass)."""
        return self._logits(self._body(self._embed(ids), cache, slot)), cache

    def _decode(self, ids: Tensor, slot: Tensor | None, cache: PagedKVCache) -> tuple[Tensor, PagedKVCache]:
        with self.kernels.one_row():
            return self._verify(ids, slot, cache)

    # With an adapter slot, and without: the base path computes no LoRA terms at all (measured:
    # a zero-filled slot through the LoRA matmuls cost about a fifth of decode speed).
    def prefill(self, ids: Tensor, slot: Tensor, cache: PagedKVCache) -> tuple[Tensor, PagedKVCache]:
        return self._prefill(ids, slot, cache)

    def verify(self, ids: Tensor, slot: Tensor, cache: PagedKVCache) -> tuple[Tensor, PagedKVCache]:
        return self._verify(ids, slot, cache)

    def decode(self, ids: Tensor, slot: Tensor, cache: PagedKVCache) -> tuple[Tensor, PagedKVCache]:
        return self._decode(ids, slot, cache)

    def decode_base(self, ids: Tensor, cache: PagedKVCache) -> tuple[Tensor, PagedKVCache]:
        return self._decode(ids, None, cache)

    def prefill_base(self, ids: Tensor, cache: PagedKVCache) -> tuple[Tensor, PagedKVCache]:
        return self._prefill(ids, None, cache)

    def verify_base(self, ids: Tensor, cache: PagedKVCache) -> tuple[Tensor, PagedKVCache]:
        return self._verify(ids, None, cache)

    def create_kv(self, max_batch: tirx.Var, max_tokens: tirx.Var, chunk: tirx.Var, page: tirx.Var) -> PagedKVCache:
        s = self.s
        return TIRPagedKVCache(
            attn_kind="mha", max_batch_size=max_batch, max_total_seq_len=max_tokens, prefill_chunk_size=chunk,
            page_size=page, support_sliding_window=0, layer_partition=relax.ShapeExpr([0, s.layers]),
            num_hidden_layers=s.layers, num_attention_heads=s.heads, num_key_value_heads=s.kv_heads,
            qk_head_dim=s.head_dim, v_head_dim=s.head_dim, mla_original_qk_head_dim=0, mla_original_v_head_dim=0,
            rope_mode=RopeMode.NORMAL, rope_scale=1, rope_theta=s.rope_theta, rope_scaling={},
            rope_ext_factors=relax.prim_value(0), rotary_dim=s.head_dim, enable_disaggregation=False,
            dtype="float32", target=self.target,
        )  # fmt: skip


def entry_points() -> dict[str, Any]:
    """The exported functions' arguments (`nn.spec.ModuleSpec.from_raw`'s form)."""
    packed = {"param_mode": "packed", "effect_mode": "none"}
    cache = nn.spec.Object(object_type=PagedKVCache)
    slot = nn.spec.Tensor([1], "int32")
    return {
        "prefill": {"ids": nn.spec.Tensor(["n"], "int32"), "slot": slot, "cache": cache, "$": packed},
        "verify": {"ids": nn.spec.Tensor(["n"], "int32"), "slot": slot, "cache": cache, "$": packed},
        "prefill_base": {"ids": nn.spec.Tensor(["n"], "int32"), "cache": cache, "$": packed},
        "verify_base": {"ids": nn.spec.Tensor(["n"], "int32"), "cache": cache, "$": packed},
        "decode": {"ids": nn.spec.Tensor([1], "int32"), "slot": slot, "cache": cache, "$": packed},
        "decode_base": {"ids": nn.spec.Tensor([1], "int32"), "cache": cache, "$": packed},
        "create_kv": {"max_batch": int, "max_tokens": int, "chunk": int, "page": int,
                      "$": {"param_mode": "none", "effect_mode": "none"}},
    }  # fmt: skip


def build_module(
    shape: LlamaShape, kind: TargetKind, threads: int, int8_activations: bool = False
) -> tuple[Any, list[str]]:
    """(Relax IRModule with prefill, verify, decode, their `_base` twins and create_kv; parameter names).

    The attention projections carry LoRA slots: per layer, stacked A (slots, 3R, hidden) and B
    (slots, out, 3R) for q|k|v and the same for o, all run-time parameters. `prefill` and
    `verify` take the slot to use, so switching adapters is an index, not a recompile or a copy.
    `int8_activations` (llvm on x86 with AVX2): the 4-bit matmuls take int8-rounded inputs
    (`int8.q4_1_matmul_avx2`) in every entry point, so a row's matmul never depends on the batch.
    """
    target = resolve_target(kind, threads=threads)
    if int8_activations and not (kind == "llvm" and int8.supported(target)):
        raise EngineError(
            f"int8 activations need an x86 CPU with {', '.join(int8.FEATURES)} (target {kind}, cpu "
            f"{target.attrs.get('mcpu', '?')}): set engine.tvm.int8_activations = false"
        )
    model = Llama(shape, Kernels(kind, int8_activations), target)
    with target, cpu_attention_kernels() if kind == "llvm" else nullcontext():
        mod, named = model.export_tvm(spec=nn.spec.ModuleSpec.from_raw(entry_points(), model))
    return mod, [name for name, _ in named]
