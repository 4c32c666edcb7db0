"""The permission sandbox: `network` and `subprocess` are enforced by a Python audit hook on the
handler's thread; `require` checks the capabilities a handler context offers (`llm`, `home.control`, `timers`).

Python cannot sandbox code in the same process, so this stops mistakes, not a hostile plugin.
"""

from __future__ import annotations

import contextvars
import sys
from collections.abc import Callable
from typing import Any, TypeVar

from assistant.skills.api import PermissionDenied

T = TypeVar("T")

# The permissions of the skill whose handler runs on this thread; None is framework code.
_granted: contextvars.ContextVar[frozenset[str] | None] = contextvars.ContextVar("granted", default=None)
_AUDITED = {
    "socket.connect": "network", "socket.getaddrinfo": "network", "socket.sendto": "network",
    "socket.sendmsg": "network", "socket.bind": "network", "urllib.Request": "network",
    "subprocess.Popen": "subprocess", "os.system": "subprocess", "os.exec": "subprocess",
    "os.posix_spawn": "subprocess", "os.spawn": "subprocess", "os.fork": "subprocess",
}  # fmt: skip
# C functions that start programs, looked up through ctypes (`CDLL(None).system(...)`).
_SPAWN_SYMBOLS = {"system", "popen", "fork", "vfork", "execv", "execve", "execvp", "execl", "execlp", "posix_spawn",
                  "posix_spawnp"}  # fmt: skip
_hook_installed = False


def _audit(event: str, args: tuple[Any, ...]) -> None:
    needed = _AUDITED.get(event)
    if event == "ctypes.dlsym" and len(args) > 1 and str(args[1]) in _SPAWN_SYMBOLS:
        needed = "subprocess"
    if needed is None:
        return
    granted = _granted.get()
    if granted is not None and needed not in granted:
        raise PermissionDenied(f"'{event}' needs permission '{needed}'")


def install_audit_hook() -> None:
    """Python's audit hooks see every socket and process start, so undeclared ones fail in the handler."""
    global _hook_installed
    if not _hook_installed:
        sys.addaudithook(_audit)
        _hook_installed = True


def require(granted: frozenset[str], permission: str, skill: str) -> None:
    if permission not in granted:
        raise PermissionDenied(f"skill '{skill}' used '{permission}' without declaring it in its permissions")


def grant(granted: frozenset[str]) -> None:
    """The permissions of the skill whose handler runs on this thread from now on."""
    _granted.set(granted)


def as_framework(fn: Callable[..., T], *args: Any) -> T:
    """Run framework code (a home sink sending to MQTT or HTTP) from a handler's thread without the
    skill's limits: the sink is the integrator's choice, not the skill's."""
    context = contextvars.copy_context()
    context.run(_granted.set, None)
    return context.run(fn, *args)
