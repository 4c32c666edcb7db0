"""The root app and its own commands: ask (one turn), run (the live voice loop), chat, info, route."""

from __future__ import annotations

import json
import sys
import threading
from pathlib import Path
from typing import Annotated

import typer
from rich.text import Text

from assistant.cli.common import ConfigOpt, err, fail, load, load_assistant, out
from assistant.engine import EngineError

app = typer.Typer(help="On-device voice assistant.", no_args_is_help=True, add_completion=False)


def _say(piece: str) -> None:
    sys.stdout.write(piece)
    sys.stdout.flush()


def _announce(skill: str, text: str) -> None:
    err.print(Text.assemble((f"\n({skill})", "bold"), f" {text}"))


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
        raise fail("give exactly one input: TEXT / --text, or --wav FILE", 2)
    cfg = load(config)
    assistant = load_assistant(cfg)
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
        err.print(f"route: {result.route.intent} via {result.route.stage} ({result.route.reason})", style="dim")
        err.print(f"timing: {result.timing_line()}", style="dim")
    except EngineError as exc:
        raise fail(str(exc)) from None
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
        loop = build_voice(assistant, speaker, wake_word=wake, learn=False)  # a file run reads, never writes, state
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
        raise fail(str(exc)) from None
    if tts_out is not None:
        write_wav(tts_out, speaker.audio(), speaker.rate or 22050)
    traces = loop.traces
    if as_json:
        out.print_json(json.dumps([t.model_dump() | {"breakdown_ms": t.breakdown_ms()} for t in traces]))
        return
    if not traces or not traces[-1].transcript:
        err.print(Text.assemble(("nothing recognized", "yellow"), f" ({traces[-1].reason})" if traces else ""))
        raise typer.Exit(1)
    t = traces[-1]
    out.print(t.reply)
    err.print(f"heard: {t.transcript!r} ({t.source}: {t.reason}); route: {t.intent}", style="dim")
    err.print(f"trace (ms): {json.dumps(t.breakdown_ms())}", style="dim")
    if tts_out is not None:
        seconds = len(speaker.audio()) / max(1, speaker.rate)
        err.print(f"reply audio: {tts_out} ({seconds:.1f} s)", style="dim")


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

    cfg = load(config)
    assistant = load_assistant(cfg)
    try:
        mic = Microphone(cfg.audio.input_device, cfg.audio.sample_rate, cfg.audio.block_ms)
        speaker = SoundDeviceSpeaker(cfg.audio.output_device)
        loop = build_voice(assistant, speaker, wake_word=wake and cfg.wake_word.enabled)
        loop.on_trace = lambda t: err.print(
            f"{t.transcript!r} -> {t.intent}: {t.reply} {json.dumps(t.breakdown_ms())}", style="dim"
        )
        mic.start()
    except (AudioError, AsrError, TtsError) as exc:
        assistant.close()
        raise fail(str(exc)) from None
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

    cfg = load(config)
    assistant = load_assistant(cfg)
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
                err.print(Text.assemble(("error:", "red"), f" {exc}"))
                continue
            sys.stdout.write("\n")
            err.print(f"{result.route.intent} via {result.route.stage} | {result.timing_line()}", style="dim")
    finally:
        assistant.close()


@app.command()
def info(config: ConfigOpt = None) -> None:
    """Show the runtime, CPU features and the thread budget."""
    import os

    from assistant.engine.llama_cpp import system_info

    cfg = load(config)
    t = cfg.engine.threads
    out.print(f"cores available: {os.cpu_count()}")
    out.print(f"threads: llm {t.target} (prefill {t.target_batch}), draft {t.draft}, asr 1 (single-threaded)")
    out.print(f"llama.cpp: {system_info().strip()}")


@app.command()
def route(
    text: Annotated[str, typer.Argument(help="An utterance.")],
    config: ConfigOpt = None,
    llm: Annotated[bool, typer.Option(help="Load the model for the classifier stage when no template matches.")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="The decision as JSON.")] = False,
) -> None:
    """Show where an utterance goes and why (stage, intent, score, slots), without running the skill."""
    from assistant.pipeline import Assistant

    cfg = load(config)
    assistant = load_assistant(cfg) if llm else Assistant(cfg, None)
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
