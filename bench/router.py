"""Routing accuracy on the test set and the deterministic stage's latency.

    python -m bench.router --json results.json

`accuracy` covers every stage (templates, the LLM classifier on the default model, the chat
fallback); `deterministic_precision` is over the utterances a template claimed. `route_p50_us`
and `route_p99_us` time the template stage alone, on every utterance of the set (hits and
misses), after the router is compiled. `route_vs_normalize` relates it to the cost of only
normalizing the same text in the same run, so machines of different speed compare.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from assistant.config import load_config
from assistant.pipeline import Assistant
from assistant.router import normalize
from assistant.router.evaluate import evaluate, load_phrases
from bench.report import emit

DATA = Path(__file__).resolve().parent.parent / "tests" / "data"


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", type=Path, help="Also write the results to this file.")
    parser.add_argument("--repeats", type=int, default=20, help="Timing passes over the set.")
    parser.add_argument("--no-llm", action="store_true", help="Templates and fallback only (no model load).")
    parser.add_argument("--phrases", type=Path, default=DATA / "routing.toml")
    parser.add_argument("--config", type=Path, default=DATA / "routing-config.toml")
    args = parser.parse_args()

    cfg = load_config(args.config)
    t0 = time.perf_counter()
    assistant = Assistant(cfg, None) if args.no_llm else Assistant.load(cfg)
    load_s = time.perf_counter() - t0
    phrases = load_phrases(args.phrases)
    now = phrases.now
    t0 = time.perf_counter()
    report = evaluate(assistant.router, phrases, classify=not args.no_llm)
    eval_s = time.perf_counter() - t0

    texts = [c.text for c in phrases.case]
    route_us: list[float] = []
    norm_us: list[float] = []
    for _ in range(args.repeats):
        for text in texts:
            t = time.perf_counter()
            assistant.router.match(text, now)
            route_us.append((time.perf_counter() - t) * 1e6)
            t = time.perf_counter()
            normalize(text)
            norm_us.append((time.perf_counter() - t) * 1e6)
    classified = [r for r in report.results if r.route.stage == "classifier" or r.route.stage == "fallback"]
    print(report.confusion_table())
    for r in report.results:
        if not r.ok:
            print(f"MISS {r.case.text!r}: expected {r.case.intent} {r.case.slots or ''}, got {r.got} "
                  f"{r.route.slots or ''} [{r.route.stage}: {r.route.reason}]")  # fmt: skip
    emit(
        {
            "cases": len(report.results),
            "accuracy": report.accuracy,
            "deterministic_precision": report.deterministic_precision,
            "deterministic_cases": len(report.deterministic),
            "by_stage": report.by_stage(),
            "llm_stage_accuracy": sum(r.ok for r in classified) / len(classified) if classified else None,
            "route_p50_us": statistics.median(route_us),
            "route_p99_us": _percentile(route_us, 0.99),
            "route_vs_normalize": statistics.median(route_us) / statistics.median(norm_us),
            "templates": len(assistant.router.templates),
            "model": cfg.engine.base_model if not args.no_llm else None,
            "load_s": load_s,
            "eval_s": eval_s,
        },
        args.json,
    )
    assistant.close()


if __name__ == "__main__":
    main()
