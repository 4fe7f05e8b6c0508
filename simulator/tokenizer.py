"""The emulator's tokenizer and chat template: Llama 3's, built from local files only.

Token counts: Llama 3's tokenizer is tiktoken's ``cl100k_base`` BPE (its first
100,256 ranks are Llama 3's first ids) plus 28,000 tokens for other languages,
with the same pre-tokenizer pattern. The emulator encodes with ``cl100k_base``,
read from the file litellm ships (:func:`policies.encodings.load_encoding`; no
download), so English counts land within a few percent of Llama 3's. Llama 3's
special tokens keep their ids (``<|begin_of_text|>`` 128000, ``<|eot_id|>``
128009: the top 256 ids of the vocabulary). For a model with a smaller
vocabulary, ranks beyond it are folded into it (the counts stay the same).

Output tokens: the emulator plans its answers as BPE tokens
(:meth:`Tokenizer.split`), so an answer re-encoded in the next turn's prompt
gives the same ids and counts, as with a real model and its prefix cache.

The chat template is Llama 3.1 Instruct's (``tokenizer_config.json``
``chat_template``; SGLang renders it with ``apply_chat_template``): a system
header with "Cutting Knowledge Date: December 2023" and "Today Date: 26 Jul
2024" (the template's default ``date_string``), ``Environment: ipython`` and
the tools in the first user message when there are tools, ``ipython`` turns
for tool results, assistant tool calls as ``{"name": ..., "parameters": ...}``.
"Hi" as the only message is 36 tokens. The tokens of one turn (with the
generation prompt) are a prefix of the next turn's.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

import tiktoken

from policies.encodings import load_encoding

#: Llama 3's special tokens, as offsets from the start of its top 256 ids (128000).
_SPECIALS = {
    "<|begin_of_text|>": 0,
    "<|end_of_text|>": 1,
    "<|start_header_id|>": 6,
    "<|end_header_id|>": 7,
    "<|eom_id|>": 8,
    "<|eot_id|>": 9,
    "<|python_tag|>": 10,
}
_SPECIAL_SPLIT = re.compile("(" + "|".join(re.escape(s) for s in _SPECIALS) + ")")
_RESERVED_IDS = 256
#: The template's default ``date_string`` (SGLang passes none).
DATE_STRING = "26 Jul 2024"


@functools.cache
def _bpe() -> tiktoken.Encoding:
    """``cl100k_base``, built once per process (about 0.4 s) and never changed."""
    return load_encoding("cl100k_base")


class Tokenizer:
    """Text <-> ids for a vocabulary of ``vocab_size`` ids, Llama 3 style."""

    def __init__(self, vocab_size: int = 128256) -> None:
        if vocab_size <= 2 * _RESERVED_IDS:
            raise ValueError("vocab_size too small")
        self.vocab_size = vocab_size
        self._text_ids = vocab_size - _RESERVED_IDS
        self.special_ids = {tok: self._text_ids + off for tok, off in _SPECIALS.items()}
        #: The end of an assistant turn, what a natural stop matches (Llama 3: 128009).
        self.eos_token_id = self.special_ids["<|eot_id|>"]
        self._bpe = _bpe()
        self._texts: dict[int, str] = {i: t for t, i in self.special_ids.items()}

    def _text_id(self, rank: int) -> int:
        if rank < self._text_ids:
            return rank
        folded = _RESERVED_IDS + rank % (self._text_ids - _RESERVED_IDS)
        self._texts.setdefault(folded, self._bpe.decode([rank]))
        return folded

    def piece_id(self, piece: str) -> int:
        """The id of one output piece: its BPE id when it is one token, else a stable hash."""
        special = self.special_ids.get(piece)
        if special is not None:
            return special
        ranks = self._bpe.encode_ordinary(piece)
        if len(ranks) == 1:
            return self._text_id(ranks[0])
        digest = hashlib.blake2b(piece.encode(), digest_size=8).digest()
        span = self._text_ids - self._bpe.n_vocab
        if span > _RESERVED_IDS:  # Llama 3: the ids beyond cl100k's
            token_id = self._bpe.n_vocab + int.from_bytes(digest, "big") % span
        else:
            token_id = _RESERVED_IDS + int.from_bytes(digest, "big") % (
                self._text_ids - _RESERVED_IDS
            )
        self._texts.setdefault(token_id, piece)
        return token_id

    def split(self, text: str) -> list[str]:
        """``text`` as one string per BPE token; concatenated they give ``text`` back.

        Bytes of a character split across tokens stay together in one piece.
        """
        pieces: list[str] = []
        pending = b""
        for rank in self._bpe.encode_ordinary(text):
            pending += self._bpe.decode_single_token_bytes(rank)
            try:
                pieces.append(pending.decode())
            except UnicodeDecodeError:
                continue
            pending = b""
        if pending:
            pieces.append(pending.decode(errors="replace"))
        return pieces

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``; the special tokens' text maps to their ids."""
        ids: list[int] = []
        for part in _SPECIAL_SPLIT.split(text):
            special = self.special_ids.get(part)
            if special is not None:
                ids.append(special)
            elif part:
                ids.extend(self._text_id(r) for r in self._bpe.encode_ordinary(part))
        return ids

    def decode(self, ids: Sequence[int]) -> str:
        """Text of ``ids``; ids it cannot name render as ``<id>``."""
        out: list[str] = []
        run: list[int] = []
        for token_id in ids:
            known = self._texts.get(token_id)
            if known is None and 0 <= token_id < min(self._text_ids, self._bpe.n_vocab):
                run.append(token_id)
                continue
            if run:
                out.append(self._bpe.decode(run))
                run = []
            out.append(known if known is not None else f"<{token_id}>")
        if run:
            out.append(self._bpe.decode(run))
        return "".join(out)


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


def _dumps(value: Any, indent: int | None = None) -> str:
    """The template's ``tojson`` (transformers: ``json.dumps``, ``ensure_ascii=False``)."""
    return json.dumps(value, ensure_ascii=False, indent=indent)


def _function(tool: Mapping[str, Any]) -> dict[str, Any]:
    """What SGLang gives the template per tool: ``Tool.function.model_dump()``."""
    function = tool.get("function")
    f: Mapping[str, Any] = function if isinstance(function, Mapping) else {}
    return {
        "description": f.get("description"),
        "name": f.get("name"),
        "parameters": f.get("parameters"),
        "strict": bool(f.get("strict", False)),
    }


def _header(role: str) -> str:
    return f"<|start_header_id|>{role}<|end_header_id|>\n\n"


def _tool_call_text(message: Mapping[str, Any]) -> str:
    """An assistant tool call as the template writes it (each call, where Llama takes one)."""
    out = []
    for call in message.get("tool_calls") or []:
        function = call.get("function") if isinstance(call, Mapping) else None
        if not isinstance(function, Mapping):
            continue
        arguments = function.get("arguments")
        if isinstance(arguments, str):  # SGLang parses JSON arguments before templating
            try:
                arguments = json.loads(arguments)
            except ValueError:
                pass
        out.append(
            '{"name": "' + str(function.get("name")) + '", "parameters": ' + _dumps(arguments) + "}"
        )
    return "".join(out)


def render_chat(
    messages: Sequence[Mapping[str, Any]],
    tools: Sequence[Mapping[str, Any]] | None = None,
    *,
    add_generation_prompt: bool = True,
) -> str:
    """Render a conversation with Llama 3.1 Instruct's chat template.

    ``tools`` are OpenAI tool objects, those SGLang passes (``serving_chat.py``
    ``_process_messages``: all of them, or the one ``tool_choice`` names).
    """
    rest = list(messages)
    system = ""
    if rest and rest[0].get("role") == "system":
        system = content_text(rest.pop(0).get("content")).strip()
    parts = ["<|begin_of_text|>", _header("system")]
    if tools:
        parts.append("Environment: ipython\n")
    parts.append(f"Cutting Knowledge Date: December 2023\nToday Date: {DATE_STRING}\n\n")
    parts.append(system + "<|eot_id|>")
    if tools and rest:
        first = content_text(rest.pop(0).get("content")).strip()
        parts.append(_header("user"))
        parts.append(
            "Given the following functions, please respond with a JSON for a function call "
            "with its proper arguments that best answers the given prompt.\n\n"
            'Respond in the format {"name": function name, "parameters": dictionary of '
            "argument name and its value}.Do not use variables.\n\n"
        )
        parts.extend(_dumps(_function(tool), indent=4) + "\n\n" for tool in tools)
        parts.append(first + "<|eot_id|>")
    for message in rest:
        role = str(message.get("role"))
        if role in ("tool", "ipython"):
            # The template's test ``content is iterable`` holds for a string: tojson.
            parts.append(_header("ipython") + _dumps(message.get("content")) + "<|eot_id|>")
        elif message.get("tool_calls"):
            parts.append(_header("assistant") + _tool_call_text(message) + "<|eot_id|>")
        else:
            body = content_text(message.get("content")).strip()
            parts.append(_header(role) + body + "<|eot_id|>")
    if add_generation_prompt:
        parts.append(_header("assistant"))
    return "".join(parts)
