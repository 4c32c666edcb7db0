"""Routing accuracy on the development and held-out sets, and what each stage costs.

    python -m bench.router --json results.json                 # standard profile (the default)
    python -m bench.router --profile small --json small.json   # the 135M base with its adapters

Two phrase sets: `tests/data/routing.toml` (development: templates, examples and the router
adapter were written against it) and `tests/data/routing-heldout.toml` (written by someone who
had not seen the templates, examples or adapter data; never used to write them). For each:
`accuracy` over every stage (templates, the LLM classifier, the chat fallback; a direct device
command routed to `home.command` counts, see the set's `also`), `deterministic_precision` over
the utterances a template claimed, and `llm_stage_accuracy` over those no template matched.

Costs: `route_p50_us` / `route_p99_us` time the template stage alone on every utterance (hits
and misses), `route_vs_normalize` relates it to only normalizing the same text in the same run
(machines of different speed compare); `classifier_p50_ms` / `classifier_p99_ms` are one LLM
classification each (after `warm_s`, the one-time prefill of its fixed prompt).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Any

from assistant.config import load_config
from assistant.pipeline import Assistant
from assistant.router import normalize
from assistant.router.evaluate import evaluate, load_phrases
from bench.report import emit, percentile

DATA = Path(__file__).resolve().parent.parent / "tests" / "data"
SETS = {"dev": DATA / "routing.toml", "heldout": DATA / "routing-heldout.toml"}


def _score(assistant: Assistant, path: Path, *, classify: bool, repeats: int) -> dict[str, Any]:
    phrases = load_phrases(path)
    report = evaluate(assistant.router, phrases, classify=classify)
    print(f"== {path.name}")
    print(report.confusion_table())
    for r in report.results:
        if not r.ok:
            print(f"MISS {r.case.text!r}: expected {r.case.intent} {r.case.slots or ''}, got {r.got} "
                  f"{r.route.slots or ''} [{r.route.stage}: {r.route.reason}]")  # fmt: skip
    route_us: list[float] = []
    norm_us: list[float] = []
    for _ in range(repeats):
        for case in phrases.case:
            t = time.perf_counter()
            assistant.router.match(case.text, phrases.now)
            route_us.append((time.perf_counter() - t) * 1e6)
            t = time.perf_counter()
            normalize(case.text)
            norm_us.append((time.perf_counter() - t) * 1e6)
    unmatched = [r for r in report.results if r.route.stage in ("classifier", "fallback")]
    return {
        "cases": len(report.results),
        "accuracy": report.accuracy,
        "deterministic_precision": report.deterministic_precision,
        "deterministic_cases": len(report.deterministic),
        "by_stage": report.by_stage(),
        "llm_stage_accuracy": sum(r.ok for r in unmatched) / len(unmatched) if unmatched else None,
        "route_p50_us": round(statistics.median(route_us), 1),
        "route_p99_us": round(percentile(route_us, 0.99) or 0.0, 1),
        "route_vs_normalize": round(statistics.median(route_us) / statistics.median(norm_us), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", type=Path, help="Also write the results to this file.")
    parser.add_argument("--repeats", type=int, default=20, help="Timing passes over each set.")
    parser.add_argument("--no-llm", action="store_true", help="Templates and fallback only (no model load).")
    parser.add_argument("--profile", choices=["standard", "small"], default="standard")
    parser.add_argument("--config", type=Path, default=DATA / "routing-config.toml", help="Devices (and more).")
    parser.add_argument("--set", action="append", choices=sorted(SETS), help="Score only these sets.")
    args = parser.parse_args()

    cfg = load_config(args.config, overrides={"profile": args.profile})
    t0 = time.perf_counter()
    assistant = Assistant(cfg, None) if args.no_llm else Assistant.load(cfg)
    load_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    if assistant.router.classifier is not None:
        assistant.router.classifier.warm()
    warm_s = time.perf_counter() - t0
    classify_ms: list[float] = []
    if assistant.router.classifier is not None:
        timed = assistant.router.classifier.classify

        def classify(text: str, normalized: str) -> tuple[str | None, float, str]:
            t = time.perf_counter()
            try:
                return timed(text, normalized)
            finally:
                classify_ms.append((time.perf_counter() - t) * 1e3)

        assistant.router.classifier.classify = classify  # type: ignore[method-assign]
    results: dict[str, Any] = {"profile": args.profile, "model": None if args.no_llm else cfg.engine.base_model}
    t0 = time.perf_counter()
    for name in args.set or sorted(SETS):
        results[name] = _score(assistant, SETS[name], classify=not args.no_llm, repeats=args.repeats)
    results |= {
        "adapters": sorted(cfg.adapters) if not args.no_llm else [],
        "classifier_calls": len(classify_ms),
        "classifier_p50_ms": round(statistics.median(classify_ms), 1) if classify_ms else None,
        "classifier_p99_ms": round(percentile(classify_ms, 0.99) or 0.0, 1) if classify_ms else None,
        "templates": len(assistant.router.templates),
        "load_s": load_s,
        "warm_s": warm_s,
        "eval_s": time.perf_counter() - t0,
    }
    emit(results, args.json)
    assistant.close()


if __name__ == "__main__":
    main()
