"""Compile targets from the integrator's device kind.

TVM 0.27 takes targets as dicts, and silently turns `mcpu="native"` into a generic CPU, so the
host's real CPU name is asked from LLVM. Mali is reached through OpenCL, cross-compiled: the host
code is aarch64 and the library is loaded on the device.
"""

from __future__ import annotations

from typing import Any, Literal

TargetKind = Literal["llvm", "cuda", "vulkan", "opencl-mali"]
AARCH64_HOST = {"kind": "llvm", "mtriple": "aarch64-linux-gnu"}


def resolve_target(kind: TargetKind, *, threads: int = 2) -> Any:
    import tvm

    host = {"kind": "llvm", "mcpu": tvm.target.codegen.llvm_get_system_cpu(), "num-cores": threads}
    if kind == "llvm":
        return tvm.target.Target(host)
    if kind == "cuda":
        return tvm.target.Target({"kind": "cuda", "host": host})
    if kind == "vulkan":
        return tvm.target.Target({"kind": "vulkan", "host": host})
    if kind == "opencl-mali":
        return tvm.target.Target({"kind": "opencl", "device": "mali", "host": AARCH64_HOST})
    raise ValueError(f"unknown target kind {kind!r}: use llvm, cuda, vulkan or opencl-mali")


def device_available(kind: TargetKind) -> bool:
    """Whether this machine can run code built for `kind` (cross-compiled Mali code never runs here)."""
    import tvm

    devices = {"llvm": tvm.cpu, "cuda": tvm.cuda, "vulkan": tvm.vulkan}
    if kind not in devices:
        return False
    try:
        return bool(devices[kind](0).exist)
    except Exception:  # a runtime built without that backend raises instead of answering
        return False
