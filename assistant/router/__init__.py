"""Routing an utterance to an intent: templates first, then the LLM classifier, then the chat fallback.

- `router.py`: `Router` and `Route` (the decision with its reason), answer parsing for follow-ups;
- `templates.py`: the template language; `classifier.py`: the LLM stage; `evaluate.py`: phrase tests.
"""

from assistant.router.router import Classifier, Conflict, Route, Router, Stage, extract_slots, parse_answer
from assistant.router.templates import Template, TemplateError, compile_template
from assistant.text import normalize

__all__ = [
    "Classifier",
    "Conflict",
    "Route",
    "Router",
    "Stage",
    "Template",
    "TemplateError",
    "compile_template",
    "extract_slots",
    "normalize",
    "parse_answer",
]
