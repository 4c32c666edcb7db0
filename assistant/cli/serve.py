"""`assistant serve --wyoming`: the assistant as Home Assistant's Wyoming services."""

from __future__ import annotations

import threading
from typing import Annotated

import typer

from assistant.cli.common import ConfigOpt, err, fail, load, load_assistant


def serve(
    config: ConfigOpt = None,
    wyoming: Annotated[
        bool, typer.Option("--wyoming", help="Serve the Wyoming protocol (Home Assistant's voice).")
    ] = False,
    host: Annotated[str | None, typer.Option(help="Listen address (default: wyoming.host, loopback).")] = None,
    port: Annotated[int | None, typer.Option(help="TCP port (default: wyoming.port, 10700).")] = None,
) -> None:
    """Serve the wake word, speech recognition, voice and skills to other programs (Ctrl-C quits)."""
    from pydantic import ValidationError

    from assistant.asr import AsrError
    from assistant.serve import WyomingServer
    from assistant.tts import TtsError

    if not wyoming:
        raise fail("say which protocol to serve: --wyoming (the only one so far)", 2)
    cfg = load(config)
    try:
        update = {k: v for k, v in {"host": host, "port": port}.items() if v is not None}
        wcfg = cfg.wyoming.model_validate({**cfg.wyoming.model_dump(), **update})
    except ValidationError as exc:
        raise fail(
            f"wyoming: {exc.errors()[0]['msg']} (fix: --host 127.0.0.1, or set wyoming.allowed_clients)", 2
        ) from None
    assistant = load_assistant(cfg)
    try:
        server = WyomingServer(assistant, wcfg)
        server.start()
    except (AsrError, TtsError, OSError) as exc:
        assistant.close()
        raise fail(f"cannot serve Wyoming on {wcfg.host}:{wcfg.port}: {exc}") from None
    threading.Thread(target=assistant.warm, name="warm", daemon=True).start()
    err.print(f"Wyoming services on tcp://{wcfg.host}:{wcfg.port} (Ctrl-C quits)")
    died = False
    try:
        server.wait()
        died = True  # it returns only when the server's thread ended on its own
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
        assistant.close()
    if died:
        raise fail("the Wyoming server stopped (see the log above)")
