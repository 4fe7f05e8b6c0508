"""A deterministic stand-in tokenizer and chat template (no downloads).

Text splits GPT-2 style into special markers (``<|user|>``), words with their
leading space, punctuation runs and whitespace runs; each piece maps to a
stable id (BLAKE2 hash modulo the model's vocabulary). Counts land near a real
BPE tokenizer's for English prose, and identical text always gives identical
ids, which is all the prefix cache and usage accounting need.

The chat template renders each message between role markers and appends
``<|assistant|>`` as the generation prompt, so the tokens of one turn are a
prefix of the next turn's (the assistant reply is rendered right after the
same marker), as with real chat templates.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from typing import Any

import orjson

_PIECE = re.compile(r"<\|[a-z_]+\|>| ?\w+| ?[^\s\w]+|\s+(?!\S)|\s+")
_SPECIALS = (
    "<|begin_of_text|>",
    "<|end|>",
    "<|system|>",
    "<|user|>",
    "<|assistant|>",
    "<|tool|>",
    "<|tools|>",
    "<|tool_calls|>",
)
_RESERVED_IDS = 256


class Tokenizer:
    """Stable text <-> id mapping for a vocabulary of ``vocab_size`` ids."""

    def __init__(self, vocab_size: int = 128256) -> None:
        if vocab_size <= _RESERVED_IDS:
            raise ValueError("vocab_size too small")
        self.vocab_size = vocab_size
        self.special_ids = {tok: i + 1 for i, tok in enumerate(_SPECIALS)}
        self.eos_token_id = self.special_ids["<|end|>"]
        self._pieces: dict[int, str] = {i: t for t, i in self.special_ids.items()}

    def piece_id(self, piece: str) -> int:
        """The id of one piece (and remember it so :meth:`decode` can render it)."""
        special = self.special_ids.get(piece)
        if special is not None:
            return special
        digest = hashlib.blake2b(piece.encode(), digest_size=8).digest()
        token_id = _RESERVED_IDS + int.from_bytes(digest, "big") % (self.vocab_size - _RESERVED_IDS)
        self._pieces.setdefault(token_id, piece)
        return token_id

    def split(self, text: str) -> list[str]:
        """The pieces of ``text``; concatenated they give ``text`` back."""
        return _PIECE.findall(text)

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``."""
        return [self.piece_id(p) for p in self.split(text)]

    def decode(self, ids: Sequence[int]) -> str:
        """Text of ``ids``; ids never seen render as ``<id>``."""
        return "".join(self._pieces.get(i, f"<{i}>") for i in ids)


def content_text(content: Any) -> str:
    """Flatten OpenAI message content (string, parts list or null) to text."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        out: list[str] = []
        for part in content:
            if isinstance(part, str):
                out.append(part)
            elif isinstance(part, Mapping):
                if part.get("type") == "text":
                    out.append(str(part.get("text", "")))
                else:
                    out.append(f"<{part.get('type', 'part')}>")
        return "".join(out)
    return str(content)


def _dumps(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()


def render_assistant_body(message: Mapping[str, Any]) -> str:
    """The text of an assistant message after its ``<|assistant|>`` marker."""
    text = content_text(message.get("content"))
    calls = message.get("tool_calls")
    if calls:
        rendered = [
            {
                "name": (c.get("function") or {}).get("name"),
                "arguments": (c.get("function") or {}).get("arguments"),
            }
            for c in calls
            if isinstance(c, Mapping)
        ]
        text += "<|tool_calls|>" + _dumps(rendered)
    return text


def render_chat(
    messages: Sequence[Mapping[str, Any]],
    tools: Sequence[Mapping[str, Any]] | None = None,
    *,
    add_generation_prompt: bool = True,
) -> str:
    """Render a conversation to prompt text (tools first, then each message)."""
    parts = ["<|begin_of_text|>"]
    if tools:
        parts.append("<|tools|>" + _dumps(list(tools)) + "<|end|>")
    for message in messages:
        role = str(message.get("role"))
        if role == "assistant":
            body = render_assistant_body(message)
        elif role == "tool":
            body = f"{message.get('tool_call_id', '')}\n" + content_text(message.get("content"))
        else:
            body = content_text(message.get("content"))
        marker = f"<|{role}|>" if role in ("system", "user", "assistant", "tool") else "<|user|>"
        parts.append(marker + body + "<|end|>")
    if add_generation_prompt:
        parts.append("<|assistant|>")
    return "".join(parts)
