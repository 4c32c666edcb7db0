"""Base model vs the skill's adapter on the held-out set, on the runtime engine (what ships)."""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel

from assistant.engine import Sampling
from assistant.engine.local import LocalEngine
from assistant.training.recipe import AdapterProject


class CaseResult(BaseModel):
    text: str
    target: str
    base: str
    adapter: str
    base_score: float
    adapter_score: float


class EvalReport(BaseModel):
    skill: str
    cases: int
    base_model: str
    recipe_sha256: str
    base_metric: float
    adapter_metric: float
    metric: str
    results: list[CaseResult]

    def table(self) -> str:
        return (
            f"| held-out cases | metric | base model | with adapter |\n|---|---|---|---|\n"
            f"| {self.cases} | {self.metric} | {self.base_metric:.1%} | {self.adapter_metric:.1%} |\n"
        )


def evaluate(skill: AdapterProject, engine: LocalEngine, adapter: Path) -> EvalReport:
    """Greedy answers with the same prompt (and output grammar) the skill uses, with and without the adapter.

    A dataset that defines `predict(engine, example, adapter_name)` produces the output itself (the
    router runs its whole routing decision); `MAX_TOKENS` sets the reply budget (default 64).
    """
    name = f"eval-{skill.name}"
    engine.load_adapter(name, adapter)
    predict = getattr(skill.dataset, "predict", None)
    max_tokens = int(getattr(skill.dataset, "MAX_TOKENS", 64))
    results = []
    for ex in skill.heldout_examples():
        outs = []
        for which in (None, name):
            if predict is not None:
                outs.append(str(predict(engine, ex, which)).strip())
                continue
            gen = engine.generate(ex.messages, max_tokens=max_tokens, sampling=Sampling(), adapter=which,
                                  grammar=skill.grammar)  # fmt: skip
            outs.append(gen.result().strip())
        results.append(CaseResult(
            text=ex.messages[-1].content, target=ex.target, base=outs[0], adapter=outs[1],
            base_score=skill.score(ex, outs[0]), adapter_score=skill.score(ex, outs[1]),
        ))  # fmt: skip
    n = len(results)
    return EvalReport(
        skill=skill.name, cases=n, base_model=skill.recipe.base_model, recipe_sha256=skill.recipe_sha256,
        base_metric=sum(r.base_score for r in results) / n, adapter_metric=sum(r.adapter_score for r in results) / n,
        metric=str(getattr(skill.dataset, "METRIC", "exact match")), results=results,
    )  # fmt: skip


def write_report(skill: AdapterProject, report: EvalReport) -> Path:
    path = skill.dir / "eval.json"
    path.write_text(json.dumps(report.model_dump(), indent=1) + "\n")
    readme = skill.dir / "README.md"
    head = readme.read_text().split("## Eval")[0].rstrip() + "\n\n" if readme.is_file() else f"# {skill.name}\n\n"
    readme.write_text(head + "## Eval (held-out, `assistant adapters eval " + skill.name + "`)\n\n" + report.table())
    return path
