"""Compile targets from the integrator's device kind.

TVM 0.27 takes targets as dicts, and silently turns `mcpu="native"` into a generic CPU, so the
host's real CPU name is asked from LLVM. Mali is reached through OpenCL, cross-compiled: the host
code is aarch64 and the library is loaded on the device.
"""

from __future__ import annotations

import platform
import shutil
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


def device(kind: TargetKind) -> Any:
    import tvm

    return {"llvm": tvm.cpu, "cuda": tvm.cuda, "vulkan": tvm.vulkan, "opencl-mali": tvm.opencl}[kind](0)


def cross_compiled(kind: TargetKind) -> bool:
    """Code for `kind` is built here for another host (Mali boards are aarch64): it is exported
    as a .tar of objects that the device links when it loads it."""
    return kind == "opencl-mali" and platform.machine() not in ("aarch64", "arm64")


def device_available(kind: TargetKind) -> bool:
    """Whether this machine can run code built for `kind` (cross-compiled Mali code never runs here)."""
    if cross_compiled(kind):
        return False
    try:
        return bool(device(kind).exist)
    except Exception:  # a runtime built without that backend raises instead of answering
        return False


def missing_codegen(kind: TargetKind) -> str | None:
    """Why this TVM build cannot generate code for `kind`, or None if it can."""
    import tvm

    name = {"llvm": "llvm", "cuda": "cuda", "vulkan": "vulkan", "opencl-mali": "opencl"}[kind]
    if tvm.get_global_func(f"target.build.{name}", allow_missing=True) is None:
        return (
            f"this apache-tvm build has no {name} code generator (the PyPI wheel is built without it): "
            "use another target, or a TVM built with it"
        )
    if kind == "cuda" and shutil.which("nvcc") is None:
        return "building for cuda needs the CUDA toolkit's nvcc on PATH"
    return None
