"""Loading skills from entry points and running their handlers in isolation.

A handler runs on its own thread with a time budget. An exception, a timeout or a missing
permission becomes a short spoken apology plus a log record; the assistant keeps serving.
A skill whose handlers keep hanging is suspended so abandoned threads cannot pile up.
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import datetime as dt
import heapq
import inspect
import itertools
import logging
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any

from pydantic import ValidationError

from assistant.config.schema import AssistantConfig
from assistant.engine import ChatMessage, Engine, GenerationStats, Sampling
from assistant.skillhost.home import Home
from assistant.skillhost.llm import SkillLLM
from assistant.skills.api import FollowUp, Handler, Intent, PermissionDenied, Reply, Skill, SkillError
from assistant.skills.capabilities import HomeError
from assistant.skills.slots import Slot

log = logging.getLogger("assistant.skills")
ENTRY_POINT_GROUP = "assistant.skills"
MAX_HUNG = 2  # abandoned handler threads per skill before the skill is suspended

# --- permissions --------------------------------------------------------------

# The permissions of the skill whose handler runs on this thread; None is framework code.
_granted: contextvars.ContextVar[frozenset[str] | None] = contextvars.ContextVar("granted", default=None)
_AUDITED = {
    "socket.connect": "network", "socket.getaddrinfo": "network", "socket.sendto": "network",
    "socket.bind": "network", "urllib.Request": "network",
    "subprocess.Popen": "subprocess", "os.system": "subprocess", "os.exec": "subprocess",
    "os.posix_spawn": "subprocess", "os.spawn": "subprocess", "os.fork": "subprocess",
}  # fmt: skip
_hook_installed = False


def _audit(event: str, _args: tuple[Any, ...]) -> None:
    needed = _AUDITED.get(event)
    if needed is None:
        return
    granted = _granted.get()
    if granted is not None and needed not in granted:
        raise PermissionDenied(f"'{event}' needs permission '{needed}'")


def _install_audit_hook() -> None:
    """Python's audit hooks see every socket and process start, so undeclared ones fail in the handler."""
    global _hook_installed
    if not _hook_installed:
        sys.addaudithook(_audit)
        _hook_installed = True


def require(granted: frozenset[str], permission: str, skill: str) -> None:
    if permission not in granted:
        raise PermissionDenied(f"skill '{skill}' used '{permission}' without declaring it in its permissions")


# --- discovery ----------------------------------------------------------------


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


# --- scheduled announcements --------------------------------------------------


@dataclass(order=True)
class _Job:
    due: float
    key: str = field(compare=False)
    skill: str = field(compare=False)
    text: str = field(compare=False)
    cancelled: bool = field(default=False, compare=False)


class Scheduler:
    """One thread that fires announcements at their time (timers)."""

    def __init__(self, announce: Callable[[str, str], None]):
        self._announce = announce
        self._heap: list[_Job] = []
        self._jobs: dict[str, _Job] = {}
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="assistant-scheduler", daemon=True)
        self._thread.start()

    def add(self, skill: str, key: str, delay_s: float, text: str) -> None:
        with self._cond:
            old = self._jobs.pop(key, None)
            if old is not None:
                old.cancelled = True
            job = _Job(time.monotonic() + max(0.0, delay_s), key, skill, text)
            self._jobs[key] = job
            heapq.heappush(self._heap, job)
            self._cond.notify()

    def cancel(self, key: str) -> bool:
        with self._cond:
            job = self._jobs.pop(key, None)
            if job is None:
                return False
            job.cancelled = True
            return True

    def pending(self, prefix: str) -> list[tuple[str, float, str]]:
        now = time.monotonic()
        with self._cond:
            jobs = sorted((j for k, j in self._jobs.items() if k.startswith(prefix)), key=lambda j: j.due)
            return [(j.key[len(prefix) :], j.due - now, j.text) for j in jobs]

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._closed and (not self._heap or self._heap[0].due > time.monotonic()):
                    self._cond.wait(None if not self._heap else max(0.0, self._heap[0].due - time.monotonic()))
                if self._closed:
                    return
                job = heapq.heappop(self._heap)
                if job.cancelled:
                    continue
                self._jobs.pop(job.key, None)
            try:
                self._announce(job.skill, job.text)
            except Exception:
                log.exception("announcement of skill '%s' failed", job.skill)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()


# --- handler context ----------------------------------------------------------


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


class TurnOutput:
    """Text a handler streams to the user during the turn (LLM replies, `ctx.say`)."""

    def __init__(self, on_text: Callable[[str], None] | None):
        self._on_text = on_text
        self.pieces: list[str] = []
        self.first_at: float | None = None
        self.stats: list[GenerationStats] = []

    def emit(self, text: str) -> None:
        if not text:
            return
        if self.first_at is None:
            self.first_at = time.perf_counter()
        self.pieces.append(text)
        if self._on_text is not None:
            self._on_text(text)

    @property
    def text(self) -> str:
        return "".join(self.pieces).strip()


class HandlerContext:
    """The `Context` a handler receives."""

    def __init__(
        self,
        runtime: SkillRuntime,
        loaded: LoadedSkill,
        intent: str,
        utterance: str,
        slots: dict[str, Any],
        history: Sequence[ChatMessage],
        output: TurnOutput,
        cancel: threading.Event,
        now: dt.datetime,
    ):
        self._runtime = runtime
        self._loaded = loaded
        self.skill = loaded.skill.name
        self.intent = intent
        self.utterance = utterance
        self.slots = slots
        self.settings = loaded.settings
        self.state = loaded.state
        self.now = now
        self.history = list(history)
        self.cancel = cancel
        self._output = output
        self._llm: SkillLLM | None = None

    def _require(self, permission: str) -> None:
        require(self._loaded.granted, permission, self.skill)

    @property
    def llm(self) -> SkillLLM:
        self._require("llm")
        if self._llm is None:
            self._llm = self._runtime.llm_for(
                self._loaded, self.history, self._output.emit, self.cancel, stats=self._output.stats
            )
        return self._llm

    @property
    def home(self) -> Home:
        self._require("home.control")
        return self._runtime.home

    def schedule(self, delay_s: float, announcement: str, *, key: str | None = None) -> str:
        self._require("timers")
        key = key or f"job{next(self._runtime.job_ids)}"
        self._runtime.scheduler.add(self.skill, f"{self.skill}/{key}", delay_s, announcement)
        return key

    def cancel_scheduled(self, key: str) -> bool:
        self._require("timers")
        return self._runtime.scheduler.cancel(f"{self.skill}/{key}")

    def scheduled(self) -> list[tuple[str, float, str]]:
        """(key, seconds left, announcement) of this skill's pending announcements."""
        self._require("timers")
        return self._runtime.scheduler.pending(f"{self.skill}/")

    def say(self, text: str) -> None:
        self._output.emit(text if not self._output.pieces else " " + text)

    def ask(
        self, question: str, *, slot: str | None = None, then: Handler | None = None, parse: Slot | None = None
    ) -> Reply:
        return Reply(text=question, expect=FollowUp(question=question, slot=slot, handler=then, parse=parse))


# --- the runtime --------------------------------------------------------------


class SkillRuntime:
    """Loaded skills plus the capabilities they may use (LLM, home, scheduler)."""

    def __init__(
        self,
        cfg: AssistantConfig,
        engine: Engine | None,
        skills: Iterable[Skill] | None = None,
        *,
        home: Home | None = None,
        sampling: Sampling | None = None,
    ):
        _install_audit_hook()
        self.cfg = cfg
        self.engine = engine
        self.home = home or Home(cfg.home)
        self.sampling = sampling or Sampling()
        self.problems: list[LoadProblem] = []
        if skills is None:
            skills, self.problems = discover(cfg)
        self.skills: dict[str, LoadedSkill] = {}
        for skill in skills:
            try:
                self.skills[skill.name] = self._load(skill)
            except SkillError as exc:
                self.problems.append(LoadProblem(skill.name, str(exc)))
        self.listeners: list[Callable[[str, str], None]] = []
        self.scheduler = Scheduler(self._announce)
        self.job_ids = itertools.count(1)
        for p in self.problems:
            log.warning("%s", p)

    def _load(self, skill: Skill) -> LoadedSkill:
        skill.check()
        raw = self.cfg.skills.settings.get(skill.name, {})
        settings: Any = raw
        if skill.settings is not None:
            try:
                settings = skill.settings.model_validate(raw)
            except ValidationError as exc:
                where = "; ".join(
                    f"skills.settings.{skill.name}.{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
                    for e in exc.errors()
                )
                raise SkillError(f"invalid settings: {where}") from None
        elif raw:
            raise SkillError(f"[skills.settings.{skill.name}] is set but the skill takes no settings")
        env = SkillEnv(settings, self.home)
        intents = {
            it.name: dataclasses.replace(it, slots={k: s.resolve(env) for k, s in it.slots.items()})
            for it in skill.intents
        }
        adapter = skill.adapter if skill.adapter in self.cfg.adapters else None
        if skill.adapter and adapter is None:
            log.info("skill '%s' runs on the base model: adapter '%s' is not configured", skill.name, skill.adapter)
        return LoadedSkill(
            skill=skill,
            settings=settings,
            intents=intents,
            granted=frozenset(skill.permissions),
            adapter=adapter,
            timeout_s=min(skill.timeout_s or self.cfg.skills.timeout_s, self.cfg.skills.timeout_s),
        )

    def intents(self) -> list[tuple[str, Intent]]:
        return [(name, it) for name, s in self.skills.items() for it in s.intents.values()]

    def llm_for(
        self,
        loaded: LoadedSkill,
        history: Sequence[ChatMessage],
        emit: Callable[[str], None],
        cancel: threading.Event,
        *,
        stats: list[GenerationStats] | None = None,
    ) -> SkillLLM:
        if self.engine is None:
            raise PermissionDenied("no LLM is loaded in this assistant")
        skill, e = loaded.skill, self.cfg.engine
        sampling = self.sampling
        if skill.generation.temperature is not None:
            sampling = sampling.model_copy(update={"temperature": skill.generation.temperature})
        return SkillLLM(
            self.engine,
            adapter=loaded.adapter,
            system_prompt=skill.system_prompt or e.system_prompt,
            sampling=sampling,
            max_tokens=skill.generation.max_tokens or e.max_tokens,
            max_sentences=skill.generation.max_sentences,
            history=history,
            emit=emit,
            cancel=cancel,
            context_size=e.context_size,
            stats=stats,
        )

    def warm(self) -> list[str]:
        """Prefill each LLM skill's system prompt into the engine's prefix cache, fallback chat first.

        The first LLM answer otherwise pays for it: 1.9 s cold vs 0.25 s cached on the default model.
        """
        if self.engine is None:
            return []
        order = sorted(self.skills.values(), key=lambda s: s.skill.name != "chat")
        warmed = []
        for loaded in order:
            if "llm" not in loaded.granted:
                continue
            llm = self.llm_for(loaded, [], lambda _: None, threading.Event())
            self.engine.generate(llm.messages("hello"), max_tokens=1, adapter=loaded.adapter).result()
            warmed.append(loaded.skill.name)
        return warmed

    def _announce(self, skill: str, text: str) -> None:
        log.info("announcement from %s: %s", skill, text)
        for listener in list(self.listeners):
            listener(skill, text)

    def run(
        self,
        skill_name: str,
        intent_name: str,
        handler: Handler,
        *,
        utterance: str,
        slots: dict[str, Any],
        history: Sequence[ChatMessage] = (),
        on_text: Callable[[str], None] | None = None,
        cancel: threading.Event | None = None,
        now: dt.datetime | None = None,
    ) -> tuple[Reply, TurnOutput, str | None]:
        """Run a handler within its budget. Returns (reply, streamed output, error kind or None)."""
        loaded = self.skills[skill_name]
        output = TurnOutput(on_text)
        label = f"{skill_name}.{intent_name}"
        if loaded.suspended:
            log.error("skill '%s' is suspended: %d handlers are still hanging", skill_name, len(loaded.hung))
            return Reply(text=f"The {skill_name} skill is not responding right now."), output, "suspended"
        cancel = cancel or threading.Event()
        ctx = HandlerContext(
            self, loaded, intent_name, utterance, slots, history, output, cancel, now or dt.datetime.now()
        )
        box: dict[str, Any] = {}
        done = threading.Event()
        timeout = loaded.timeout_s

        def work() -> None:
            _granted.set(loaded.granted)
            try:
                result = handler(ctx)
                if inspect.isawaitable(result):
                    result = asyncio.run(asyncio.wait_for(_await(result), timeout))
                box["result"] = result
            except BaseException as exc:
                box["error"] = exc
            finally:
                done.set()

        thread = threading.Thread(target=work, name=f"skill-{label}", daemon=True)
        thread.start()
        if not done.wait(timeout):
            cancel.set()  # stops an LLM generation the handler is waiting on
            if not done.wait(0.2):
                loaded.hung.append(thread)
                log.error("handler %s exceeded its %.1f s budget and was abandoned", label, timeout)
                return Reply(text=f"Sorry, the {skill_name} skill took too long."), output, "timeout"
        error = box.get("error")
        if isinstance(error, PermissionDenied):
            log.error("handler %s was denied: %s", label, error)
            return Reply(text=f"Sorry, the {skill_name} skill is not allowed to do that."), output, "permission"
        if isinstance(error, HomeError):
            return Reply(text=str(error)), output, None
        if isinstance(error, (asyncio.TimeoutError, TimeoutError)):
            log.error("handler %s exceeded its %.1f s budget", label, timeout)
            return Reply(text=f"Sorry, the {skill_name} skill took too long."), output, "timeout"
        if error is not None:
            log.error("handler %s raised %s: %s", label, type(error).__name__, error, exc_info=error)
            return Reply(text=f"Sorry, the {skill_name} skill ran into a problem."), output, "error"
        result = box.get("result")
        if isinstance(result, str):
            return Reply(text=result), output, None
        if isinstance(result, Reply):
            return result, output, None
        log.error("handler %s returned %s instead of a str or Reply", label, type(result).__name__)
        return Reply(text=f"Sorry, the {skill_name} skill ran into a problem."), output, "error"

    def close(self) -> None:
        self.scheduler.close()


async def _await(awaitable: Any) -> Any:
    return await awaitable


def settings_problems(cfg: AssistantConfig) -> list[LoadProblem]:
    """Every skill-settings and plugin problem, for `assistant config check`."""
    runtime = SkillRuntime(cfg, None)
    runtime.close()
    return runtime.problems
