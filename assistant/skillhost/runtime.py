"""The skill runtime: the loaded skills, their capabilities, and their handlers run in isolation.

A handler runs on its own thread with a time budget. An exception, a timeout or a missing
permission becomes a short spoken apology plus a log record; the assistant keeps serving.
A skill whose handlers keep hanging is suspended so abandoned threads cannot pile up.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import inspect
import itertools
import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NamedTuple

from assistant.config.schema import AssistantConfig
from assistant.engine import ChatMessage, Engine, GenerationStats, Sampling
from assistant.skillhost.context import HandlerContext, TurnOutput
from assistant.skillhost.home import ConfirmationNeeded, Home
from assistant.skillhost.llm import SkillLLM
from assistant.skillhost.loader import LoadedSkill, LoadProblem, discover, load
from assistant.skillhost.sandbox import grant, install_audit_hook
from assistant.skillhost.scheduler import Scheduler
from assistant.skills.api import (
    Context,
    FollowUp,
    Handler,
    Intent,
    NothingToDo,
    PermissionDenied,
    Reply,
    Skill,
    SkillError,
)
from assistant.skills.capabilities import HomeCommand, HomeError, describe, spoken_name
from assistant.skills.slots import Enum

log = logging.getLogger("assistant.skills")


class RunResult(NamedTuple):
    """What running a handler gave."""

    reply: Reply
    output: TurnOutput  # what the handler streamed during the turn
    error: str | None  # timeout, error, permission or suspended when the skill failed
    nothing_to_do: bool = False  # the handler raised NothingToDo: reply.text is its message


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
        install_audit_hook()
        self.cfg = cfg
        self.engine = engine
        self.home = home or Home(cfg.home)
        self.sampling = sampling or Sampling()
        self.problems: list[LoadProblem] = []
        if skills is None:
            skills, self.problems = discover(cfg)
        self.skills: dict[str, LoadedSkill] = {}
        # Configured, and really loaded (an engine shared with another config may hold others).
        adapters = [a for a in cfg.adapters if engine is None or a in engine.adapters]
        for skill in skills:
            try:
                self.skills[skill.name] = load(skill, self.cfg, self.home, adapters)
            except SkillError as exc:
                self.problems.append(LoadProblem(skill.name, str(exc)))
        self.listeners: list[Callable[[str, str], None]] = []
        self.scheduler = Scheduler(self._announce)
        self.job_ids = itertools.count(1)
        for p in self.problems:
            log.warning("%s", p)

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
        confirmed: bool = False,
    ) -> RunResult:
        """Run a handler within its budget. `confirmed`: the route was clear (a template or the answer
        to our question), so sensitive home commands run; otherwise they are asked about first."""
        loaded = self.skills[skill_name]
        output = TurnOutput(on_text)
        label = f"{skill_name}.{intent_name}"
        if loaded.suspended:
            log.error("skill '%s' is suspended: %d handlers are still hanging", skill_name, len(loaded.hung))
            return RunResult(Reply(text=f"The {skill_name} skill is not responding right now."), output, "suspended")
        cancel = cancel or threading.Event()
        ctx = HandlerContext(
            self, loaded, intent_name, utterance, slots, history, output, cancel, now or dt.datetime.now(),
            confirmed=confirmed,
        )  # fmt: skip
        box: dict[str, Any] = {}
        done = threading.Event()
        timeout = loaded.timeout_s

        def work() -> None:
            grant(loaded.granted)
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
        started = time.perf_counter()
        thread.start()
        # The budget is the handler's own time: waiting for the engine while other callers use it
        # does not count (under 4 concurrent callers half the LLM turns timed out in the queue).
        while not done.wait(0.05) and time.perf_counter() - started - output.queued_s() < timeout:
            pass
        if not done.is_set():
            cancel.set()  # stops an LLM generation the handler is waiting on
            if not done.wait(0.2):
                output.close()  # whatever it says from now on is not part of any turn
                loaded.hung.append(thread)
                log.error("handler %s exceeded its %.1f s budget and was abandoned", label, timeout)
                return RunResult(Reply(text=f"Sorry, the {skill_name} skill took too long."), output, "timeout")
        error = box.get("error")
        if isinstance(error, PermissionDenied):
            log.error("handler %s was denied: %s", label, error)
            return RunResult(
                Reply(text=f"Sorry, the {skill_name} skill is not allowed to do that."), output, "permission"
            )
        if isinstance(error, HomeError):
            return RunResult(Reply(text=str(error)), output, None)
        if isinstance(error, NothingToDo):
            log.info("handler %s found nothing to do: %s", label, error)
            return RunResult(Reply(text=str(error)), output, None, nothing_to_do=True)
        if isinstance(error, ConfirmationNeeded):
            log.info("handler %s: %s asks for a yes first", label, error.command.model_dump_json())
            question = str(error)
            follow = FollowUp(
                question=question, handler=_run_confirmed(error.command, spoken_name(error.device)), parse=YES_NO
            )
            return RunResult(Reply(text=question, expect=follow), output, None)
        if isinstance(error, (asyncio.TimeoutError, TimeoutError)):
            log.error("handler %s exceeded its %.1f s budget", label, timeout)
            return RunResult(Reply(text=f"Sorry, the {skill_name} skill took too long."), output, "timeout")
        if error is not None:
            log.error("handler %s raised %s: %s", label, type(error).__name__, error, exc_info=error)
            return RunResult(Reply(text=f"Sorry, the {skill_name} skill ran into a problem."), output, "error")
        result = box.get("result")
        if isinstance(result, str):
            return RunResult(Reply(text=result), output, None)
        if isinstance(result, Reply):
            return RunResult(result, output, None)
        log.error("handler %s returned %s instead of a str or Reply", label, type(result).__name__)
        return RunResult(Reply(text=f"Sorry, the {skill_name} skill ran into a problem."), output, "error")

    def close(self) -> None:
        self.scheduler.close()
        self.home.close()


YES_NO = Enum(
    {
        "yes": "yes",
        "yeah": "yes",
        "yep": "yes",
        "sure": "yes",
        "do it": "yes",
        "go ahead": "yes",
        "please do": "yes",
        "confirm": "yes",
        "okay": "yes",
        "ok": "yes",
        "no": "no",
        "nope": "no",
        "don't": "no",
        "do not": "no",
        "no don't": "no",
    }  # fmt: skip
)


def _run_confirmed(command: HomeCommand, name: str) -> Handler:
    """The follow-up handler of a confirmation question: runs the command on a yes, and only then."""

    def answer(ctx: Context) -> str:
        if ctx.slots.get("answer") != "yes":
            return f"Okay, I left the {name} as it is."
        return describe(command, ctx.home.execute(command))  # the answer's turn is a confirmed one

    return answer


async def _await(awaitable: Any) -> Any:
    return await awaitable


def settings_problems(cfg: AssistantConfig) -> list[LoadProblem]:
    """Every skill-settings and plugin problem, for `assistant config check`."""
    runtime = SkillRuntime(cfg, None)
    runtime.close()
    return runtime.problems
