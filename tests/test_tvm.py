"""TVM backend: 4-bit kernels on the real default model's weights, and targets (CPU here, GPU when
there is one, Mali as a cross-compile)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from assistant.engine import EngineError

tvm = pytest.importorskip("tvm", reason="the tvm extra (scripts/test.sh installs it)")

from assistant.engine.tvm import (  # noqa: E402
    Q4_1Weight,
    device_available,
    q4_1_matmul,
    read_q4_1,
    resolve_target,
    schedule_cpu,
    schedule_gpu,
)

FFN_UP = "blk.0.ffn_up.weight"


@pytest.fixture(scope="module")
def ffn_up(default_model_path: Path) -> Q4_1Weight:
    return read_q4_1(default_model_path, [FFN_UP])[FFN_UP]


def test_q4_1_split_is_the_gguf_dequantization(default_model_path: Path, ffn_up: Q4_1Weight) -> None:
    import gguf

    reader = gguf.GGUFReader(str(default_model_path))
    tensor = next(t for t in reader.tensors if t.name == FFN_UP)
    reference = gguf.quants.dequantize(np.asarray(tensor.data), tensor.tensor_type).reshape(ffn_up.shape)
    assert ffn_up.shape == (1536, 576)
    assert ffn_up.codes.nbytes + ffn_up.scales.nbytes + ffn_up.mins.nbytes == np.asarray(tensor.data).nbytes
    np.testing.assert_array_equal(ffn_up.dequantize(), reference)


def test_a_tensor_of_another_type_or_name_is_refused(default_model_path: Path) -> None:
    with pytest.raises(EngineError, match="tensor output_norm.weight is F32, not Q4_1"):
        read_q4_1(default_model_path, ["output_norm.weight"])
    with pytest.raises(EngineError, match="no tensor named nope"):
        read_q4_1(default_model_path, [FFN_UP, "nope"])


def _run(mod: object, device: object, x: np.ndarray, w: Q4_1Weight) -> np.ndarray:
    args = [tvm.runtime.tensor(a, device) for a in (x, w.codes, w.scales, w.mins)]
    out = tvm.runtime.tensor(np.zeros((x.shape[0], w.shape[0]), np.float32), device)
    mod(*args, out)  # type: ignore[operator]
    return np.asarray(out.numpy())


def test_cpu_kernel_computes_the_dequantized_matmul_for_decode_and_prefill(ffn_up: Q4_1Weight) -> None:
    """One compiled function, any row count: decode (1 row) and prefill (7 rows)."""
    out_f, in_f = ffn_up.shape
    mod = tvm.compile(schedule_cpu(q4_1_matmul(out_f, in_f)), target=resolve_target("llvm"))
    reference = ffn_up.dequantize()
    rng = np.random.default_rng(0)
    for rows in (1, 7):
        x = rng.standard_normal((rows, in_f)).astype(np.float32)
        got = _run(mod, tvm.cpu(), x, ffn_up)
        np.testing.assert_allclose(got, x @ reference.T, rtol=1e-4, atol=1e-3)


def test_llvm_target_names_this_cpu_not_a_generic_one() -> None:
    target = resolve_target("llvm", threads=2)
    assert str(target.attrs["mcpu"]) == tvm.target.codegen.llvm_get_system_cpu() != "generic"
    with pytest.raises(ValueError, match="unknown target kind"):
        resolve_target("metal")  # type: ignore[arg-type]


def test_mali_opencl_cross_compiles_to_a_library_the_device_loads(tmp_path: Path, ffn_up: Q4_1Weight) -> None:
    out_f, in_f = ffn_up.shape
    mod = tvm.compile(schedule_gpu(q4_1_matmul(out_f, in_f)), target=resolve_target("opencl-mali"))
    source = "\n".join(m.inspect_source() for m in mod.mod.imports if m.kind == "opencl")
    assert "__kernel" in source and "uchar" in source  # packed codes reach the device as bytes
    library = tmp_path / "q4_matmul-mali.tar"
    mod.export_library(str(library))  # objects for aarch64 + OpenCL source; linked on the device
    assert library.stat().st_size > 0
    assert not device_available("opencl-mali")


@pytest.mark.parametrize("kind", ["cuda", "vulkan"])
def test_gpu_kernel_computes_the_dequantized_matmul(kind: str, ffn_up: Q4_1Weight) -> None:
    if not device_available(kind):  # type: ignore[arg-type]
        pytest.skip(f"no {kind} device on this machine")
    out_f, in_f = ffn_up.shape
    mod = tvm.compile(schedule_gpu(q4_1_matmul(out_f, in_f)), target=resolve_target(kind))  # type: ignore[arg-type]
    x = np.random.default_rng(1).standard_normal((3, in_f)).astype(np.float32)
    device = tvm.cuda(0) if kind == "cuda" else tvm.vulkan(0)
    np.testing.assert_allclose(_run(mod, device, x, ffn_up), x @ ffn_up.dequantize().T, rtol=1e-4, atol=1e-3)
