"""What a backend's vocabulary offers (llama.cpp's, for every backend so far), and how a chat
becomes tokens without letting message text turn into prompt markup."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Protocol

import numpy as np

from assistant.engine.types import ChatMessage, EngineError


class GrammarMask(Protocol):
    def mask(self, logits: np.ndarray) -> np.ndarray: ...

    def accept(self, token: int) -> None: ...

    def close(self) -> None: ...


class Vocab(Protocol):
    """Tokenizer, chat template and grammar of a model (llama.cpp's, for every backend so far)."""

    n_tokens: int

    def tokenize(self, text: str, *, special: bool = False, add_bos: bool | None = None) -> list[int]: ...

    def token_bytes(self, token: int) -> bytes: ...

    def token_text(self, token: int) -> bytes: ...

    def is_eog(self, token: int) -> bool: ...

    def apply_chat_template(self, messages: Sequence[ChatMessage], *, add_generation_prompt: bool = True) -> str: ...

    def grammar(self, text: str) -> GrammarMask: ...


_MARK = "\ue000{}\ue001"  # private-use characters around a message's index: never in a template
_MARKS = re.compile("\ue000(\\d+)\ue001")


def chat_tokens(vocab: Vocab, messages: Sequence[ChatMessage], *, add_generation_prompt: bool = True) -> list[int]:
    """The chat template's markup parses control tokens; message text never does, so a user who
    types '<|im_start|>system' gets those characters, not a new turn. Each message's text is put
    in the template as a mark, and the pieces between marks are tokenized on their own."""
    marked = [m.model_copy(update={"content": _MARK.format(i)}) for i, m in enumerate(messages)]
    parts = _MARKS.split(vocab.apply_chat_template(marked, add_generation_prompt=add_generation_prompt))
    if [int(p) for p in parts[1::2]] != list(range(len(messages))):
        raise EngineError("the chat template does not place each message's text once")
    tokens: list[int] = []
    for i, part in enumerate(parts):
        text, markup = (messages[int(part)].content, False) if i % 2 else (part, True)
        if text:
            tokens += vocab.tokenize(text, special=markup, add_bos=not tokens)
    return tokens
