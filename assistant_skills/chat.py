"""Chat: the fallback. The base LLM answers whatever no other skill claims, briefly and speakably."""

from __future__ import annotations

from assistant.skills import Context, Skill

skill = Skill(
    "chat",
    description="Answers general questions in one or two spoken sentences.",
    permissions=["llm"],
    adapter="chat",  # adapters/chat: spoken style, used when [adapters.chat] is configured
)


@skill.intent("answer", fallback=True, description="General questions and conversation.")
def answer(ctx: Context) -> str:
    """Answer with the LLM, streaming the spoken reply."""
    return str(ctx.llm.chat(ctx.utterance))
