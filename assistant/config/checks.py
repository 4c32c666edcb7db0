"""Checks that need more than the file itself: model names, vocabularies, the core budget."""

from __future__ import annotations

import difflib
import os

from assistant.config.loader import ConfigProblem
from assistant.config.schema import AssistantConfig


def check_references(cfg: AssistantConfig, cpu_count: int | None = None) -> list[ConfigProblem]:
    from assistant.modelstore import ModelStore

    problems: list[ConfigProblem] = []
    store = ModelStore.from_config(cfg)
    for broken in store.broken:
        problems.append(
            ConfigProblem(
                key="models.manifest_dirs", message=broken, fix="correct or remove that manifest", severity="warning"
            )
        )

    def model(key: str, name: str):  # type: ignore[no-untyped-def]
        if name in store.manifests:
            return store.manifests[name]
        close = difflib.get_close_matches(name, list(store.manifests), n=1, cutoff=0.5)
        problems.append(
            ConfigProblem(
                key=key,
                message=f"no model manifest named '{name}'",
                fix=(f"did you mean '{close[0]}'? " if close else "")
                + "see `assistant models list` for the known names",
            )
        )
        return None

    base = model("engine.base_model", cfg.engine.base_model)
    if base is not None:
        status = store.status(base)
        if not status.ready:
            problems.append(
                ConfigProblem(
                    key="engine.base_model",
                    message=f"model '{base.name}' is not ready: {status.detail}",
                    fix=f"run `assistant models prepare {base.name} --install`",
                )
            )
    if cfg.engine.draft_model is not None:
        draft = model("engine.draft_model", cfg.engine.draft_model)
        if draft is not None and base is not None and draft.vocab_family != base.vocab_family:
            problems.append(
                ConfigProblem(
                    key="engine.draft_model",
                    message=f"draft '{draft.name}' uses the {draft.vocab_family} vocabulary "
                    f"but the base '{base.name}' uses {base.vocab_family}",
                    fix="pick a draft model with the same vocab_family as the base (token ids must match)",
                )
            )

    cores = cpu_count or os.cpu_count() or 1
    t = cfg.engine.threads
    # The draft proposes and the target verifies in turn, so their threads never run at the same time.
    draft = t.draft if cfg.engine.speculative.enabled and cfg.engine.draft_model is not None else 0
    if max(t.target, t.target_batch, draft) > cores:
        problems.append(
            ConfigProblem(
                key="engine.threads",
                message=f"LLM threads (target {t.target}, prefill {t.target_batch}, draft {draft}) > {cores} cores; "
                "llama.cpp's spinning threads slow down sharply when oversubscribed",
                fix=f"lower engine.threads so that none is above {cores}",
                severity="warning",
            )
        )
    problems += _remote_problems(cfg)
    return problems


def _remote_problems(cfg: AssistantConfig) -> list[ConfigProblem]:
    """A home server's API key sent in clear beyond this machine is worth a warning."""
    from urllib.parse import urlparse

    from assistant.config.schema import is_loopback

    remote = cfg.engine.remote
    if cfg.engine.backend != "openai":
        return []
    problems = []
    url = urlparse(remote.url)
    keyed = remote.api_key is not None or bool(os.environ.get("ASSISTANT_REMOTE_API_KEY"))
    if url.scheme == "http" and not is_loopback(url.hostname or "") and keyed:
        problems.append(
            ConfigProblem(
                key="engine.remote.url",
                message=f"{remote.url} is plain http beyond this machine: the API key travels readable with every "
                "request",
                fix="serve the API over https (a reverse proxy in front of the server) or keep it on a trusted network",
                severity="warning",
            )
        )
    budget = min(cfg.skills.timeout_s, cfg.skills.classifier_timeout_s)
    if remote.first_token_timeout_s > budget / 2:
        problems.append(
            ConfigProblem(
                key="engine.remote.first_token_timeout_s",
                message=f"{remote.first_token_timeout_s:g} s leaves the local engine less than half of the "
                f"{budget:g} s a handler or the classifier may take: a slow server's turns time out instead",
                fix=f"set it to at most {budget / 2:g} s",
                severity="warning",
            )
        )
    return problems
