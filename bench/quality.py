"""How often the assistant answers everyday questions right, per profile.

    python -m bench.quality --json standard.json                 # the standard profile (1.5B base)
    python -m bench.quality --profile small --json small.json    # the 135M base with its adapters

Each question of `bench/data/quality.toml` (factual, how-to, translation and arithmetic in words,
with accepted answers) goes through the whole turn (`Assistant.ask`: router, skill, LLM, spoken
filter), as a user would ask it, each in a fresh session. An answer is right when one `accept`
string occurs, every `require_all` string occurs and no `reject` string occurs (lowercased,
punctuation stripped, whitespace collapsed). Arithmetic and translations may be answered by the
calculator and translate skills: that is what a user gets. Reported: `correct` overall and
`by_kind`, the route stage of each answer, turn time p50/p95 and first-token latency p50 of the
LLM turns, decode speed p50, the process's peak resident memory.
"""

from __future__ import annotations

import argparse
import re
import resource
import statistics
import sys
import time
import tomllib
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from assistant.config import load_config
from assistant.pipeline import Assistant
from bench.report import emit, percentile

DATA = Path(__file__).resolve().parent / "data" / "quality.toml"


class Question(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: str
    text: str
    accept: list[str] = Field(min_length=1)
    require_all: list[str] = Field(default_factory=list)
    reject: list[str] = Field(default_factory=list)


def canon(text: str) -> str:
    """Lowercased, punctuation gone (a decimal point between digits stays), whitespace collapsed."""
    text = re.sub(r"(?<=\d)\.(?=\d)", "\0", text.lower())
    text = re.sub(r"[^\w\s\0]", " ", text).replace("\0", ".")
    return " ".join(text.split())


def correct(q: Question, answer: str) -> bool:
    """Substrings of the canonical answer, as the set was written for (its operands avoid collisions)."""
    a = canon(answer)
    return (
        any(canon(s) in a for s in q.accept)
        and all(canon(s) in a for s in q.require_all)
        and not any(canon(s) in a for s in q.reject)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", type=Path, help="Also write the results to this file.")
    parser.add_argument("--profile", choices=["standard", "small"], default="standard")
    parser.add_argument("-c", "--config", type=Path, help="A config file (the profile option still applies).")
    parser.add_argument("--limit", type=int, help="Only the first N questions (a quick look).")
    args = parser.parse_args()

    questions = [Question.model_validate(q) for q in tomllib.loads(DATA.read_text())["question"]][: args.limit]
    cfg = load_config(args.config, overrides={"profile": args.profile})
    t0 = time.perf_counter()
    assistant = Assistant.load(cfg)
    load_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    assistant.warm()
    warm_s = time.perf_counter() - t0
    right: dict[str, list[bool]] = defaultdict(list)
    stages: Counter[str] = Counter()
    turn_s: list[float] = []
    first_ms: list[float] = []
    tok_s: list[float] = []
    for q in questions:
        t = time.perf_counter()
        result = assistant.ask(q.text)
        turn_s.append(time.perf_counter() - t)
        ok = correct(q, result.text)
        right[q.kind].append(ok)
        stages[f"{result.route.intent} ({result.route.stage})"] += 1
        if result.stats is not None and result.stats.completion_tokens:
            first_ms.append(result.timings_ms.get("first_token", 0.0))
            tok_s.append(result.stats.decode_tok_s)
        if not ok:
            print(f"WRONG [{q.kind}] {q.text!r} -> {result.text!r} ({result.route.intent})", file=sys.stderr)
    everything = [ok for oks in right.values() for ok in oks]
    results: dict[str, Any] = {
        "profile": args.profile,
        "model": cfg.engine.base_model,
        "draft": cfg.engine.draft_model if cfg.engine.speculative.enabled else None,
        "adapters": sorted(cfg.adapters),
        "questions": len(everything),
        "correct": sum(everything) / len(everything),
        "by_kind": {kind: round(sum(oks) / len(oks), 3) for kind, oks in sorted(right.items())},
        "routes": dict(stages.most_common()),
        "turn_p50_s": statistics.median(turn_s),
        "turn_p95_s": percentile(turn_s, 0.95),
        "first_token_p50_ms": statistics.median(first_ms) if first_ms else None,
        "decode_tok_s_p50": statistics.median(tok_s) if tok_s else None,
        "load_s": load_s,
        "warm_s": warm_s,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,  # models are mmapped: resident
    }
    emit(results, args.json)
    assistant.close()


if __name__ == "__main__":
    main()
