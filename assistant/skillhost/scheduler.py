"""Announcements that fire later (timers): one thread for every skill's scheduled jobs."""

from __future__ import annotations

import heapq
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

log = logging.getLogger("assistant.skills")


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
