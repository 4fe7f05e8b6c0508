"""Deterministic "model output": text, JSON and tool calls planned from the prompt.

Everything is a pure function of the prompt token ids, the choice index, the
emulator seed and the request's knobs, so the same request always gets the
same answer (and the same token counts). An output is planned in full before
the engine runs it; the engine only decides *when* each token appears.

Each :class:`Piece` is one output token. Text pieces carry their text; a tool
call is one header piece (the call's id and function name) followed by the
pieces of its JSON arguments, which is also how SGLang streams tool calls.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from simulator.tokenizer import Tokenizer

_WORDS = (
    "the system routes each request to a worker that holds its prefix so the cache "
    "stays warm while agents plan call tools read results and answer with short clear "
    "steps about flights hotels orders refunds weather schedules budgets and reports "
    "then check every field twice before they confirm"
).split()


@dataclass(frozen=True, slots=True)
class Piece:
    """One output token: text, or part of tool call ``call_index``."""

    text: str
    call_index: int | None = None
    call_header: bool = False


@dataclass(frozen=True, slots=True)
class ToolCallPlan:
    """A planned tool call (OpenAI shape)."""

    id: str
    name: str
    arguments: str

    def to_openai(self, index: int) -> dict[str, Any]:
        """The non-streaming ``message.tool_calls[i]`` object SGLang returns."""
        return {
            "id": self.id,
            "index": index,
            "type": "function",
            "function": {"name": self.name, "arguments": self.arguments},
        }


@dataclass(frozen=True, slots=True)
class OutputPlan:
    """The whole answer for one choice."""

    pieces: tuple[Piece, ...]
    token_ids: tuple[int, ...]
    finish_reason: str
    matched_stop: int | str | None
    tool_calls: tuple[ToolCallPlan, ...] = ()

    @property
    def text(self) -> str:
        """The text content (empty for a tool-call answer)."""
        return "".join(p.text for p in self.pieces if p.call_index is None)

    def __len__(self) -> int:
        return len(self.pieces)


@dataclass(frozen=True, slots=True)
class GenerationRequest:
    """The knobs of one choice's generation, normalised from any endpoint."""

    prompt_ids: Sequence[int]
    max_tokens: int
    choice_index: int = 0
    seed: int = 0
    stop: tuple[str, ...] = ()
    ignore_eos: bool = False
    json_schema: Mapping[str, Any] | None = None
    json_mode: bool = False
    tools: tuple[Mapping[str, Any], ...] = ()
    tool_choice: Any = "auto"
    parallel_tool_calls: bool = True
    last_role: str | None = None
    min_natural_tokens: int = 8
    max_natural_tokens: int = 64


def _rng(req: GenerationRequest, salt: str) -> random.Random:
    h = hashlib.blake2b(digest_size=16)
    h.update(f"{req.seed}:{req.choice_index}:{salt}:".encode())
    h.update(b",".join(str(i).encode() for i in req.prompt_ids))
    return random.Random(h.digest())


def _call_id(req: GenerationRequest, k: int) -> str:
    h = hashlib.blake2b(digest_size=12)
    h.update(f"{req.seed}:{req.choice_index}:{k}:".encode())
    h.update(b",".join(str(i).encode() for i in req.prompt_ids))
    return "call_" + h.hexdigest()


def wants_tool_calls(req: GenerationRequest) -> bool:
    """Whether this turn answers with tool calls rather than text."""
    if not req.tools or req.tool_choice == "none":
        return False
    if req.tool_choice == "required" or isinstance(req.tool_choice, Mapping):
        return True
    return req.last_role == "user"


def example_from_schema(schema: Any, rng: random.Random, depth: int = 0) -> Any:
    """A deterministic value that satisfies the common parts of a JSON schema."""
    if not isinstance(schema, Mapping) or depth > 6:
        return rng.choice(_WORDS)
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][rng.randrange(len(schema["enum"]))]
    for key in ("anyOf", "oneOf", "allOf"):
        options = schema.get(key)
        if isinstance(options, list) and options:
            return example_from_schema(options[0], rng, depth + 1)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind is None:
        kind = "object" if "properties" in schema else "string"
    if kind == "object":
        props = schema.get("properties") or {}
        return {str(name): example_from_schema(sub, rng, depth + 1) for name, sub in props.items()}
    if kind == "array":
        count = max(1, int(schema.get("minItems", 1)))
        return [example_from_schema(schema.get("items"), rng, depth + 1) for _ in range(count)]
    if kind == "integer":
        low = int(schema.get("minimum", 1))
        high = int(schema.get("maximum", max(low, 100)))
        return rng.randint(low, max(low, high))
    if kind == "number":
        return round(rng.uniform(float(schema.get("minimum", 1)), 100.0), 2)
    if kind == "boolean":
        return rng.random() < 0.5
    if kind == "null":
        return None
    if schema.get("format") == "date":
        return f"2024-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
    return f"{rng.choice(_WORDS)}_{rng.choice(_WORDS)}"


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def _plan_tool_calls(req: GenerationRequest, tok: Tokenizer) -> OutputPlan:
    rng = _rng(req, "tools")
    functions = [t.get("function") or {} for t in req.tools]
    if isinstance(req.tool_choice, Mapping):
        wanted = (req.tool_choice.get("function") or {}).get("name")
        chosen = [f for f in functions if f.get("name") == wanted][:1] or functions[:1]
    else:
        count = 2 if req.parallel_tool_calls and len(functions) >= 2 and rng.random() < 0.5 else 1
        start = rng.randrange(len(functions))
        chosen = [functions[(start + k) % len(functions)] for k in range(count)]
    calls: list[ToolCallPlan] = []
    pieces: list[Piece] = []
    for k, fn in enumerate(chosen):
        args = _dumps(example_from_schema(fn.get("parameters") or {}, rng))
        call = ToolCallPlan(_call_id(req, k), str(fn.get("name", "")), args)
        calls.append(call)
        pieces.append(Piece(call.name, call_index=k, call_header=True))
        pieces.extend(Piece(p, call_index=k) for p in tok.split(args))
    ids = tuple(tok.piece_id(p.text) for p in pieces)
    return OutputPlan(tuple(pieces), ids, "tool_calls", None, tuple(calls))


def _natural_words(req: GenerationRequest) -> list[str]:
    rng = _rng(req, "text")
    if req.ignore_eos:  # a few words more than needed: the plan stops at max_tokens
        length = req.max_tokens + 2
    else:
        low = req.min_natural_tokens
        length = rng.randint(low, max(low, req.max_natural_tokens))
    pieces: list[str] = []
    sentence = 0
    target = rng.randint(5, 11)
    while len(pieces) < length:
        if sentence >= target:
            pieces.append(".")
            sentence, target = 0, rng.randint(5, 11)
            continue
        word = rng.choice(_WORDS)
        if sentence == 0:
            word = word.capitalize()
        pieces.append(word if not pieces else " " + word)
        sentence += 1
    if pieces and length > 1 and pieces[-1] != ".":
        pieces[-1] = "."
    return pieces


def plan_output(req: GenerationRequest, tok: Tokenizer) -> OutputPlan:
    """Plan the answer of one choice; never longer than ``req.max_tokens`` tokens."""
    if wants_tool_calls(req):
        plan = _plan_tool_calls(req, tok)
        if len(plan) <= req.max_tokens:
            return plan
        pieces = plan.pieces[: req.max_tokens]
        return OutputPlan(pieces, plan.token_ids[: req.max_tokens], "length", None, ())
    if req.json_schema is not None or req.json_mode:
        rng = _rng(req, "json")
        if req.json_schema is not None:
            value = example_from_schema(req.json_schema, rng)
        else:
            value = {"answer": " ".join(rng.choice(_WORDS) for _ in range(6))}
        texts = tok.split(_dumps(value))
        natural_end = True
    else:
        # One piece per BPE token of the whole text: the answer re-encodes to the same ids.
        texts = tok.split("".join(_natural_words(req)))
        natural_end = not req.ignore_eos
    finish: str = "stop"
    matched: int | str | None = tok.eos_token_id
    out: list[str] = []
    so_far = ""
    for text in texts:
        if len(out) >= req.max_tokens:
            finish, matched = "length", None
            break
        candidate = so_far + text
        hit = _first_stop(candidate, req.stop)
        if hit is not None:
            cut, stop = hit
            out.append(candidate[len(so_far) : cut] if cut > len(so_far) else "")
            finish, matched = "stop", stop
            break
        out.append(text)
        so_far = candidate
    else:
        if not natural_end:
            finish, matched = "length", None
    pieces = tuple(Piece(t) for t in out)
    ids = tuple(tok.piece_id(t) if t else tok.eos_token_id for t in out)
    return OutputPlan(pieces, ids, finish, matched)


def _first_stop(text: str, stops: Sequence[str]) -> tuple[int, str] | None:
    best: tuple[int, str] | None = None
    for stop in stops:
        if not stop:
            continue
        at = text.find(stop)
        if at >= 0 and (best is None or at < best[0]):
            best = (at, stop)
    return best
