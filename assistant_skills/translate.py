"""Translate short phrases with the LLM (and this skill's adapter when configured)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from assistant.skills import ChatMessage, Context, Enum, NothingToDo, Skill, Text

LANGUAGES = ["french", "spanish", "german", "italian", "portuguese", "dutch", "korean", "japanese", "chinese",
             "english", "russian", "polish", "swedish", "turkish"]  # fmt: skip


class TranslateSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    languages: list[str] = Field(LANGUAGES, min_length=1, description="Target languages people may ask for.")


skill = Skill(
    "translate",
    description="Translates a word or a short phrase into another language.",
    permissions=["llm"],
    adapter="translate",
    settings=TranslateSettings,
    system_prompt="You are a translator. Reply with the translation only, no explanation.",
)

_LANGUAGE = Enum(source=lambda env: {lang.lower(): lang.capitalize() for lang in env.settings.languages})
_TEXT = Text(validate=lambda t: t if len(t.split()) <= 20 else None)


@skill.intent(
    "translate",
    templates=[
        "translate {text} (to|into) {language}",
        "(how do you|how do i|how would you) say {text} in {language}",
        "what is {text} in {language}",
        "what's {text} in {language}",
        "say {text} in {language}",
        "{language} for {text}",
        "what's the {language} (word|phrase) for {text}",
    ],
    slots={"text": _TEXT, "language": _LANGUAGE},
    examples=["could you render thank you in french", "give me the german translation of goodbye"],
)
def translate(ctx: Context) -> str:
    """Translate a phrase."""
    text, language = ctx.slots.get("text"), ctx.slots.get("language")
    if not text or not language:
        raise NothingToDo("Say for example: translate good morning into French.")
    messages = [
        ChatMessage(role="system", content=skill.system_prompt or ""),
        ChatMessage(role="user", content=f"Translate to {language}: {text}"),
    ]
    result = ctx.llm.complete(messages, max_tokens=48, stop=["\n"]).strip().strip('"')
    if not result:
        return f"Sorry, I can't translate that into {language}."
    return f"In {language}, {text} is: {result}"
