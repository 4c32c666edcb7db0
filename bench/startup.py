"""Cold-start path of `assistant ask`: config, model verification, load, first and warm turn.

    python -m bench.startup --json results.json

Ratios compare against a baseline measured in the same run:
`verify_stamped_vs_full` (load-time check with a valid stamp / full sha256 re-hash) and
`warm_vs_cold_turn` (same question again with the prompt's KV state cached / cold cache).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from assistant.config import load_config
from assistant.modelstore import ModelStore
from assistant.pipeline import Assistant, Session
from bench.report import emit


def _ms(t0: float) -> float:
    return (time.perf_counter() - t0) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", type=Path, help="Also write the results to this file.")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    t0 = time.perf_counter()
    cfg = load_config()
    config_ms = _ms(t0)

    with tempfile.TemporaryDirectory() as cache:
        store = ModelStore(list(cfg.models.manifest_dirs), Path(cache))
        manifest = store.get(cfg.engine.base_model)
        full = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            store.verify(manifest)
            full.append(_ms(t0))
        stamped = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            store.prepare(manifest)
            stamped.append(_ms(t0))

        t0 = time.perf_counter()
        assistant = Assistant.load(cfg, store)
        load_ms = _ms(t0)

    question = "What is the capital of France?"
    cold, warm, first_token = [], [], []
    for _ in range(args.repeats):
        assert assistant.engine is not None
        assistant.engine.reset()
        t0 = time.perf_counter()
        result = assistant.ask(question, Session())
        cold.append(_ms(t0))
        first_token.append(result.timings_ms["first_token"])
        t0 = time.perf_counter()
        assistant.ask(question, Session())
        warm.append(_ms(t0))
    assistant.close()

    med = statistics.median
    results = {
        "config_load_ms": round(config_ms, 2),
        "verify_full_ms_p50": round(med(full), 2),
        "verify_stamped_ms_p50": round(med(stamped), 3),
        "verify_stamped_vs_full": round(med(stamped) / med(full), 4),
        "engine_load_ms": round(load_ms, 1),
        "cold_turn_ms_p50": round(med(cold), 1),
        "cold_first_token_ms_p50": round(med(first_token), 1),
        "warm_turn_ms_p50": round(med(warm), 1),
        "warm_vs_cold_turn": round(med(warm) / med(cold), 3),
        "model": cfg.engine.base_model,
        "threads": cfg.engine.threads.target,
    }
    emit(results, args.json)


if __name__ == "__main__":
    main()
