"""`assistant adapters`: train, convert and evaluate per-skill LoRA adapters."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

from assistant.cli.common import ConfigOpt, RichReporter, err, fail, load, out
from assistant.config import AssistantConfig
from assistant.engine import EngineError, model_store
from assistant.modelstore import ModelError

if TYPE_CHECKING:
    from assistant.training import AdapterProject

adapters_app = typer.Typer(help="Train, convert and evaluate per-skill LoRA adapters.", no_args_is_help=True)


def _adapter_skill(name: str, config: Path | None) -> tuple[AssistantConfig, AdapterProject, Path, str]:
    from assistant.config.profiles import PROFILES
    from assistant.training import ADAPTERS_DIR, AdapterProject

    cfg = load(config)
    try:  # the profile's adapters: each base model has its own recipes
        skill = AdapterProject(name, ADAPTERS_DIR / PROFILES[cfg.profile].adapters_dir)
    except EngineError as exc:
        raise fail(str(exc), 2) from None
    store = model_store(cfg)
    try:
        manifest = store.get(skill.recipe.base_model)
        base = store.locate(manifest)
    except ModelError as exc:
        raise fail(str(exc)) from None
    if manifest.sha256 is None:
        raise fail(f"base model {manifest.name} has no sha256 to record in the adapter manifest")
    return cfg, skill, base, manifest.sha256


@adapters_app.command("train")
def adapters_train(
    skill: Annotated[str, typer.Argument(help="Skill name: recipe and data in the profile's adapters/SKILL/.")],
    config: ConfigOpt = None,
    examples: Annotated[int | None, typer.Option(help="Train on this many examples (default: the recipe's).")] = None,
) -> None:
    """Train the skill's LoRA with peft, convert it to GGUF with a manifest, and check the runtime matches."""
    from assistant.training import train_skill

    cfg, sk, base, sha = _adapter_skill(skill, config)
    data = sk.train_examples(examples)
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total} steps"),
                  TextColumn("loss {task.fields[loss]:.3f}"), TimeRemainingColumn(), console=err) as bar:  # fmt: skip
        task = bar.add_task(f"training {skill} ({len(data)} examples)", total=None, loss=float("nan"))

        def step(i: int, total: int, loss: float) -> None:
            bar.update(task, completed=i, total=total, loss=loss)
            if not err.is_terminal and (i % 10 == 0 or i == total):
                err.print(f"step {i}/{total} loss {loss:.3f}")  # a log file sees no live bar

        try:
            report = train_skill(sk, base, sha, threads=cfg.engine.threads.target, examples=data, on_step=step)
        except EngineError as exc:
            raise fail(str(exc)) from None
    t = report.train
    out.print(f"trained {t.steps} steps on {t.examples} examples in {t.seconds:.0f} s "
              f"(loss {t.first_loss:.3f} -> {t.final_loss:.3f}; {t.skipped_too_long} too long)")  # fmt: skip
    out.print(f"wrote {sk.dir / 'peft'} (safetensors) and {report.gguf} (+ manifest)")
    for prompt, ref, got in report.parity:
        mark = "same" if ref == got else "DIFFERENT"
        out.print(f"parity {mark}: {prompt!r}: peft {ref!r} / runtime {got!r}")
    if not report.parity_ok:
        raise fail("the converted adapter does not reproduce the peft model's greedy output on most prompts")


@adapters_app.command("eval")
def adapters_eval(
    skill: Annotated[str, typer.Argument(help="Skill name (adapters/SKILL/).")],
    config: ConfigOpt = None,
) -> None:
    """Base model vs the skill's adapter on its held-out set; writes eval.json and the README table."""
    from assistant.engine import load_engine
    from assistant.engine.local import LocalEngine
    from assistant.training import evaluate, write_report

    cfg, sk, _, _ = _adapter_skill(skill, config)
    # The configured engine (backend, threads, context, ...) on the base the recipe trains on, with no
    # configured adapter and no draft: only the base and the adapter under evaluation are loaded, on the
    # device (a home server, backend "openai", is not what the adapter is evaluated on).
    backend = "llama_cpp" if cfg.engine.backend == "openai" else cfg.engine.backend
    update = {"base_model": sk.recipe.base_model, "draft_model": None, "backend": backend}
    engine_cfg = cfg.engine.model_copy(update=update)
    try:
        engine = load_engine(cfg.model_copy(update={"engine": engine_cfg, "adapters": {}}), reporter=RichReporter())
    except (ModelError, EngineError) as exc:
        raise fail(str(exc)) from None
    try:
        assert isinstance(engine, LocalEngine)  # no draft: a plain engine
        report = evaluate(sk, engine, sk.adapter_path)
    except EngineError as exc:
        raise fail(str(exc)) from None
    finally:
        engine.close()
    path = write_report(sk, report)
    out.print(report.table())
    out.print(f"wrote {path}")
