from __future__ import annotations

import threading

import pytest

from assistant.config import AssistantConfig
from assistant.engine import ChatMessage
from assistant.engine.llama_cpp import LlamaCppEngine
from assistant.pipeline import FALLBACK_REPLY, Assistant, Session, SpokenStream
from assistant.skillhost.llm import SkillLLM


def feed_all(stream: SpokenStream, pieces: list[str]) -> str:
    out = "".join(stream.feed(p) for p in pieces) + stream.finish()
    assert out == stream.text
    return out


def test_spoken_stream_removes_markdown_lists_and_emoji() -> None:
    s = SpokenStream(max_sentences=0)
    text = feed_all(
        s, ["**Sure", "!** Here", " are tips:\n", "1", ". Drink ", "water 💧", "\n- Sle", "ep *well*", ".\n"]
    )
    assert text.strip() == "Sure! Here are tips: Drink water Sleep well."


def test_spoken_stream_counts_sentences_but_not_list_numbers() -> None:
    s = SpokenStream(max_sentences=2)
    feed_all(s, ["1. First", " point is short. ", "Second one"])
    assert not s.done
    s.feed(" too. ")
    assert s.done


def test_spoken_stream_detects_degenerate_repetition() -> None:
    s = SpokenStream(max_sentences=0)
    for _ in range(10):
        s.feed("🍜")
    assert s.degenerate and s.done and s.text == ""


def test_spoken_stream_cuts_a_repeated_phrase_and_never_speaks_the_looping_sentence() -> None:
    """The shape the shipped chat adapter produced on an AVX2-only CPU: one phrase said five times."""
    s = SpokenStream(max_sentences=0)
    loop = "a thing that has been used for many years"
    pieces = ["The sky is blue. ", "It is ", f"{loop}, and {loop}, and {loop}, and {loop} ", f"and {loop}"]
    spoken = feed_all(s, pieces)
    assert s.degenerate and spoken == "The sky is blue."
    assert s.dropped.startswith("It is a thing") and loop not in spoken


def test_spoken_stream_loop_detection_spares_ordinary_repeated_words() -> None:
    s = SpokenStream(max_sentences=0)
    text = "It is one of the oldest cities. It is one of the largest too. The city of Rome is old."
    assert feed_all(s, [w + " " for w in text.split()]).strip() == text and not s.degenerate


def test_spoken_stream_drops_an_unfinished_sentence_but_keeps_a_natural_end_without_a_stop() -> None:
    cut = SpokenStream(max_sentences=0)
    out = "".join(cut.feed(p) for p in ["Boil water first. Then put the ", "egg in and wait for"])
    assert out + cut.finish(complete=False) == "Boil water first." and cut.dropped == "Then put the egg in and wait for"
    assert cut.text == "Boil water first."
    natural = SpokenStream(max_sentences=0)
    assert feed_all(natural, ["Four"]) == "Four" and natural.dropped == ""


def test_spoken_stream_releases_only_whole_sentences() -> None:
    s = SpokenStream(max_sentences=2)
    assert s.feed("Paris is ") == "" and s.feed("the capital. It ") == "Paris is the capital."
    assert s.feed("has a tower. And more") == " It has a tower." and s.done
    assert s.finish(complete=False) == "" and s.text == "Paris is the capital. It has a tower."


def test_session_keeps_a_bounded_history() -> None:
    session = Session(max_turns=2)
    for i in range(5):
        session.add(f"q{i}", f"a{i}")
    assert [m.content for m in session.history] == ["q3", "a3", "q4", "a4"]


@pytest.fixture(scope="module")
def assistant(engine: LlamaCppEngine) -> Assistant:
    return Assistant(AssistantConfig(), engine)


def _llm(assistant: Assistant, session: Session) -> SkillLLM:
    loaded = assistant.runtime.skills["chat"]
    return assistant.runtime.llm_for(loaded, session.history, lambda s: None, threading.Event())


def spoken_greedy(engine: LlamaCppEngine, system: str, text: str) -> str:
    """The engine's own plain greedy answer, through the spoken filter: what the chat skill must say."""
    stream = SpokenStream(max_sentences=2)
    messages = [ChatMessage(role="system", content=system), ChatMessage(role="user", content=text)]
    gen = engine.generate(messages, max_tokens=AssistantConfig().engine.max_tokens)
    for piece in gen:
        stream.feed(piece)
        if stream.done:
            break
    stream.finish(complete=gen.stats.finish_reason == "eos")
    return stream.text


def test_ask_routes_to_chat_and_answers_in_spoken_style(assistant: Assistant, engine: LlamaCppEngine) -> None:
    engine.reset()  # both from an empty cache: output after a prefix-slot eviction can differ (README)
    result = assistant.ask("What is the capital of France?")
    engine.reset()
    # The question, under the chat skill's prompt, reached the model: same text as the plain run.
    assert result.text == spoken_greedy(engine, assistant.cfg.engine.system_prompt, "What is the capital of France?")
    assert result.route.intent == "chat.answer" and result.route.reason
    assert set(result.timings_ms) == {"route", "first_token", "handle", "total"}
    assert 0 < result.timings_ms["first_token"] <= result.timings_ms["total"]
    assert not any(ch in result.text for ch in "*#`\n")


def test_local_skills_answer_without_the_llm(assistant: Assistant) -> None:
    result = assistant.ask("what is twelve times twelve")
    assert result.text == "That's 144." and result.stats is None and result.route.stage == "template"


def test_reply_is_cut_at_the_sentence_limit(engine: LlamaCppEngine) -> None:
    cfg = AssistantConfig.model_validate({"engine": {"max_tokens": 200}})
    long = Assistant(cfg, engine).ask("Tell me everything you know about the history of Rome.")
    assert long.stats is not None and long.stats.completion_tokens < 200
    assert long.text.count(". ") <= 1


def test_multi_turn_context_reaches_the_model(assistant: Assistant) -> None:
    session = Session()
    first = assistant.ask("My favourite colour is green.", session)
    messages = _llm(assistant, session).messages("What did I just tell you?")
    assert [m.role for m in messages] == ["system", "user", "assistant", "user"]
    assert messages[1].content == "My favourite colour is green." and messages[2].content == first.text


def test_old_turns_are_dropped_to_fit_the_context(engine: LlamaCppEngine) -> None:
    cfg = AssistantConfig.model_validate({"engine": {"context_size": 256, "max_tokens": 64}})
    small = Assistant(cfg, engine)
    session = Session(max_turns=50)
    for i in range(20):
        session.add(f"Here is a fairly long statement number {i} about nothing in particular.", "Okay, noted.")
    messages = _llm(small, session).messages("And now?")
    n = len(engine.tokenize(engine.apply_chat_template(messages), special=True))
    assert n <= 256 - 64
    assert messages[-1].content == "And now?" and len(messages) < 2 + 40


def test_cancel_stops_the_turn(engine: LlamaCppEngine) -> None:
    cfg = AssistantConfig.model_validate({"engine": {"max_tokens": 150}})
    cancel = threading.Event()
    pieces: list[str] = []

    def on_text(piece: str) -> None:
        pieces.append(piece)
        cancel.set()

    result = Assistant(cfg, engine).ask("Tell me a long story about a brave knight.", on_text=on_text, cancel=cancel)
    assert result.stats is not None and result.stats.finish_reason == "cancelled"
    assert result.stats.completion_tokens < 20


def test_unspeakable_reply_becomes_an_apology(engine: LlamaCppEngine) -> None:
    class EmojiEngine:
        """Stands in for a model that degenerates into emoji (seen with the 135M model)."""

        def __getattr__(self, name: str) -> object:
            return getattr(engine, name)

        def generate(self, *args: object, **kwargs: object) -> object:
            gen = engine.generate(*args, **kwargs)  # type: ignore[arg-type]
            gen._iter = iter(["🍜"] * 12)
            return gen

    result = Assistant(AssistantConfig(), EmojiEngine()).ask("Show me noodles.")  # type: ignore[arg-type]
    assert result.text == FALLBACK_REPLY


def test_warm_prefills_the_chat_prompt_before_the_first_turn(engine: LlamaCppEngine) -> None:
    def fresh(prompt: str) -> Assistant:
        cfg = AssistantConfig()
        cfg.engine.system_prompt, cfg.skills.classifier = prompt, False
        return Assistant(cfg, engine)

    cold = fresh("Pebble speaking: a terse kitchen helper who answers in one short sentence.").ask("Name a fruit.")
    warm = fresh("Quartz here, a calm garden helper who replies with one brief sentence.")
    assert warm.warm()[0] == "chat"
    result = warm.ask("Name a fruit.")
    assert cold.stats is not None and result.stats is not None
    assert result.stats.cached_tokens >= cold.stats.cached_tokens + 10  # the whole system prompt, not just the template
