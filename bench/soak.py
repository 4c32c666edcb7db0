"""Soak: many turns from several concurrent callers on the real default model, as a device runs for days.

    python -m bench.soak                      # 1,000 turns, 4 callers, 5% LLM turns (~3-6 minutes on 2 cores)
    python -m bench.soak --turns 200 --json soak.json

Each caller has its own session and sends a fixed mix: timers of a few seconds (they fire during the
run), arithmetic and unit conversions (signed ones too), the clock, home commands from templates,
negated and questioning home phrasings (nothing may reach a device), the two inputs that once crashed
routing, and a share of open questions for the LLM. It reports what a device maker needs to see stay
flat or zero: RSS growth after warm-up, exceptions escaping a turn, turn errors by kind, skills
suspended, timers set but never announced, and device commands that should not have been sent.
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

from assistant.config import AssistantConfig
from assistant.engine import load_engine
from assistant.pipeline import Assistant, Session

DEVICES = [
    {"id": "front_door", "name": "front door", "kind": "lock"},
    {"id": "kitchen_light", "name": "light", "room": "kitchen", "kind": "light"},
    {"id": "bedroom_fan", "name": "fan", "room": "bedroom", "kind": "fan"},
]
LOCAL = [
    "what is twelve times twelve",
    "convert -6 celsius to fahrenheit",
    "convert 10 miles to kilometers",
    "what is 5 minus 3",
    "what time is it",
    "what's the date today",
    "list my timers",
    "turn on the kitchen light",
    "turn off the fan",
]
# Inputs that once ended `ask` and `chat` (a 1,000-term sum reaches the LLM as a 2,000-token prompt).
HOSTILE = ["1+" * 999 + "1", "what is 5 plus caf\udce9"]
# Must never reach a device: they are counted as wrongly sent if the sink sees more than LOCAL's.
NOT_COMMANDS = ["don't unlock the front door", "is the front door locked", "never turn on the fan"]
LLM = ["why is the sky blue", "how do I boil an egg", "what is the capital of australia", "tell me a fun fact"]


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--turns", type=int, default=1000)
    ap.add_argument("--callers", type=int, default=4)
    ap.add_argument("--llm-share", type=float, default=0.05)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", type=Path, help="also write the report here")
    args = ap.parse_args()

    sink = Path(tempfile.mkdtemp()) / "home.jsonl"
    cfg = AssistantConfig.model_validate({"home": {"devices": DEVICES, "sink_path": str(sink)}})
    assistant = Assistant(cfg, load_engine(cfg))
    announced: list[str] = []
    assistant.on_announcement(lambda _skill, text: announced.append(text))
    assistant.warm()

    lock = threading.Lock()
    errors: dict[str, Counter[str]] = {"local": Counter(), "llm": Counter(), "hostile": Counter()}
    exceptions: list[str] = []
    latency: dict[str, list[float]] = {"local": [], "llm": []}
    timers_set = 0
    commands_expected = 0
    rss: dict[str, float] = {}
    quarters: list[float] = []
    done_turns = [0]
    warm_up = max(1, min(50, args.turns // 10))

    def caller(index: int, n: int) -> None:
        nonlocal timers_set, commands_expected
        rng = random.Random(args.seed * 100 + index)
        session = Session()
        for _ in range(n):
            llm = rng.random() < args.llm_share
            r = rng.random()
            if llm:
                text = rng.choice(LLM)
            elif r < 0.15:
                text = f"set a timer for {rng.randint(1, 3)} seconds"
            elif r < 0.25:
                text = rng.choice(NOT_COMMANDS)
            elif r < 0.3:
                text = rng.choice(HOSTILE)
            else:
                text = rng.choice(LOCAL)
            t0 = time.perf_counter()
            try:
                result = assistant.ask(text, session)
            except Exception as exc:  # what must never happen: a turn that does not answer
                with lock:
                    exceptions.append(f"{text[:40]!r}: {type(exc).__name__}: {exc}")
                continue
            with lock:
                latency["llm" if llm else "local"].append(time.perf_counter() - t0)
                if result.error:
                    errors["llm" if llm else "hostile" if text in HOSTILE else "local"][result.error] += 1
                if text.startswith("set a timer") and result.error is None and "starting now" in result.text:
                    timers_set += 1
                if text.startswith("turn ") and result.error is None:
                    commands_expected += 1
                done_turns[0] += 1
                if done_turns[0] == warm_up:
                    rss["start"] = rss_mb()
                if done_turns[0] % max(1, args.turns // 4) == 0:
                    quarters.append(round(rss_mb(), 1))

    per = [args.turns // args.callers + (i < args.turns % args.callers) for i in range(args.callers)]
    t_start = time.perf_counter()
    threads = [threading.Thread(target=caller, args=(i, n)) for i, n in enumerate(per)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t_start
    deadline = time.monotonic() + 5  # the last timers are due within 3 s
    while len(announced) < timers_set and time.monotonic() < deadline:
        time.sleep(0.1)
    rss["end"] = rss_mb()
    sent = sink.read_text().splitlines() if sink.is_file() else []

    def pct(xs: list[float], q: float) -> float | None:
        return round(sorted(xs)[int(q * (len(xs) - 1))] * 1000, 1) if xs else None

    report = {
        "turns": sum(len(v) for v in latency.values()) + len(exceptions),
        "callers": args.callers,
        "llm_turns": len(latency["llm"]),
        "wall_s": round(wall, 1),
        "rss_after_warm_up_mb": round(rss.get("start", 0.0), 1),
        "rss_end_mb": round(rss["end"], 1),
        "rss_growth_mb": round(rss["end"] - rss.get("start", rss["end"]), 1),
        "rss_mb_by_quarter": quarters,
        "exceptions": len(exceptions),
        "exception_samples": exceptions[:5],
        "turn_errors": {kind: dict(c) for kind, c in errors.items()},
        "suspended_skills": sorted(n for n, s in assistant.runtime.skills.items() if s.suspended),
        "timers_set": timers_set,
        "timers_announced": len(announced),
        "timers_lost": timers_set - len(announced),
        "device_commands_sent": len(sent),
        "device_commands_not_asked_for": len(sent) - commands_expected,
        "local_turn_ms_p50": pct(latency["local"], 0.5),
        "local_turn_ms_p95": pct(latency["local"], 0.95),
        "llm_turn_ms_p50": pct(latency["llm"], 0.5),
        "llm_turn_ms_p95": pct(latency["llm"], 0.95),
    }
    assistant.close()
    text = json.dumps(report, indent=1)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
