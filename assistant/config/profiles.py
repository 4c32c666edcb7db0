"""Profiles: which base model, draft and shipped adapters a device gets (`profile` in the config)."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel


class Profile(BaseModel):
    """What a profile chooses: the base model, its draft, and the adapters shipped for that base."""

    base_model: str
    draft_model: str | None
    adapters_dir: str  # under the bundled `adapters/` folder
    adapters: tuple[str, ...]
    classifier_decides: bool  # the base picks among all intents without an adapter (measured in bench.router)


PROFILES: dict[str, Profile] = {
    "standard": Profile(
        base_model="qwen2.5-coder-1.5b-instruct-q4_k_m",
        draft_model="qwen2.5-coder-0.5b-instruct-q4_k_m",
        adapters_dir="standard",
        adapters=(),
        classifier_decides=True,
    ),
    "small": Profile(
        base_model="smollm2-135m-instruct-q4_1",
        draft_model=None,
        adapters_dir=".",
        adapters=("router", "home", "chat"),
        classifier_decides=False,
    ),
}


def profile_of(base_model: str) -> Profile | None:
    """The profile built on this base model, if any."""
    return next((p for p in PROFILES.values() if p.base_model == base_model), None)


def shipped_adapter(base_model: str, name: str) -> Path | None:
    """The adapter NAME shipped for BASE_MODEL, if any (adapters fit one base's weights only)."""
    from assistant.paths import bundled_dir

    for profile in PROFILES.values():
        path = bundled_dir("adapters") / profile.adapters_dir / name / f"{name}.gguf"
        if profile.base_model == base_model and path.is_file():
            return path
    return None
