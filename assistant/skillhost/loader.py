"""Finding skills through the `assistant.skills` entry points and loading them: declaration checks,
validated settings, slots resolved against the configuration."""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Collection
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any

from pydantic import ValidationError

from assistant.config.schema import AssistantConfig
from assistant.skillhost.home import Home
from assistant.skills.api import Intent, Skill, SkillError

log = logging.getLogger("assistant.skills")
ENTRY_POINT_GROUP = "assistant.skills"
MAX_HUNG = 2  # abandoned handler threads per skill before the skill is suspended


@dataclass
class LoadProblem:
    skill: str
    message: str

    def __str__(self) -> str:
        return f"skill '{self.skill}': {self.message}"


def _wanted(name: str, cfg: AssistantConfig) -> bool:
    s = cfg.skills
    return name not in s.disabled and ("*" in s.enabled or name in s.enabled)


def discover(cfg: AssistantConfig) -> tuple[list[Skill], list[LoadProblem]]:
    """Skills from the `assistant.skills` entry points that the config enables; a broken one is reported, not fatal."""
    skills: list[Skill] = []
    problems: list[LoadProblem] = []
    seen: dict[str, str] = {}
    for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        if not _wanted(ep.name, cfg):
            continue
        try:
            obj = ep.load()
            skill = obj() if callable(obj) and not isinstance(obj, Skill) else obj
            if not isinstance(skill, Skill):
                raise SkillError(f"entry point {ep.value} is a {type(skill).__name__}, not an assistant.skills.Skill")
            skill.check()
        except Exception as exc:  # a broken plugin must not stop the assistant
            problems.append(LoadProblem(ep.name, f"cannot load {ep.value}: {type(exc).__name__}: {exc}"))
            continue
        if skill.name in seen:
            problems.append(
                LoadProblem(skill.name, f"{ep.value} and {seen[skill.name]} both define it; kept the first")
            )
            continue
        seen[skill.name] = ep.value
        skills.append(skill)
    names = {s.name for s in skills} | {p.skill for p in problems}
    for name in [*cfg.skills.enabled, *cfg.skills.settings]:
        if name != "*" and name not in names and name not in cfg.skills.disabled:
            problems.append(LoadProblem(name, "named in [skills] but no installed package provides it"))
    return skills, problems


@dataclass
class SkillEnv:
    """What slot sources see at load: the skill's validated settings and the home devices."""

    settings: Any
    home: Home


@dataclass
class LoadedSkill:
    skill: Skill
    settings: Any
    intents: dict[str, Intent]  # slots resolved against settings
    granted: frozenset[str]
    adapter: str | None
    timeout_s: float
    state: dict[str, Any] = field(default_factory=dict)
    hung: list[threading.Thread] = field(default_factory=list)

    @property
    def suspended(self) -> bool:
        self.hung = [t for t in self.hung if t.is_alive()]
        return len(self.hung) >= MAX_HUNG


def load(skill: Skill, cfg: AssistantConfig, home: Home, adapters: Collection[str]) -> LoadedSkill:
    """Check a skill, validate its settings and resolve its slots; a problem raises `SkillError`."""
    skill.check()
    raw = cfg.skills.settings.get(skill.name, {})
    settings: Any = raw
    if skill.settings is not None:
        try:
            settings = skill.settings.model_validate(raw)
        except ValidationError as exc:
            where = "; ".join(
                f"skills.settings.{skill.name}.{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
            )
            raise SkillError(f"invalid settings: {where}") from None
    elif raw:
        raise SkillError(f"[skills.settings.{skill.name}] is set but the skill takes no settings")
    env = SkillEnv(settings, home)
    intents = {
        it.name: dataclasses.replace(it, slots={k: s.resolve(env) for k, s in it.slots.items()}) for it in skill.intents
    }
    adapter = skill.adapter if skill.adapter in adapters else None
    if skill.adapter and adapter is None:
        log.info("skill '%s' runs on the base model: adapter '%s' is not loaded", skill.name, skill.adapter)
    return LoadedSkill(
        skill=skill,
        settings=settings,
        intents=intents,
        granted=frozenset(skill.permissions),
        adapter=adapter,
        timeout_s=min(skill.timeout_s or cfg.skills.timeout_s, cfg.skills.timeout_s),
    )
