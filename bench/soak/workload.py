"""Agent sessions whose context grows turn by turn, as pre-encoded HTTP requests.

Each session is a conversation that a client keeps appending to: a system prompt,
the first user message, then per turn the assistant's previous answer (plain text
or a tool call) and the next user message (or the tool's result). Once the
appended turns pass ``cap_bytes`` the oldest turns are dropped (the system prompt
and the first user message stay), as an agent framework trimming its history
would, so request bytes stay bounded however long the soak runs.

Everything is built from bytes: every message is JSON-encoded once, when its turn
is appended, and a request is a join of those pieces, so the load generator
spends a few microseconds per request on it. Contents are deterministic per
(seed, session, turn) and carry the session and turn, so no two requests are
byte-identical.
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass

import orjson

#: The body's fixed tail: tool definitions every request carries.
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "search",
            "description": "Search the knowledge base.",
            "parameters": {
                "type": "object",
                "properties": {"query": {"type": "string"}},
                "required": ["query"],
            },
        },
    }
]
SYSTEM_PROMPT = (
    "You are a support agent for an airline. Answer briefly, use the search tool for "
    "anything about bookings, fares or baggage, and never invent a policy. "
) * 4
_WORDS = (
    "booking fare refund baggage seat upgrade flight delay cancel passenger ticket "
    "loyalty points gate boarding connection itinerary receipt policy change date "
    "airport lounge meal allowance voucher status confirm route crew weather"
).split()


def _corpus(seed: int, size: int = 64 * 1024) -> str:
    """A block of pseudo-text that message contents are sliced from."""
    rng = random.Random(seed)
    words: list[str] = []
    length = 0
    while length < size:
        word = rng.choice(_WORDS)
        words.append(word)
        length += len(word) + 1
    return " ".join(words)


@dataclass(frozen=True, slots=True)
class WorkloadSpec:
    """The shape of every session's conversation."""

    model: str = "agent"
    max_tokens: int = 16
    cap_bytes: int = 4096
    seed: int = 0
    #: Every n-th turn the assistant calls a tool (and the next message is its result).
    tool_every: int = 2


class Conversation:
    """One session's growing message list, kept as encoded JSON pieces."""

    __slots__ = (
        "index",
        "session_id",
        "turn",
        "_spec",
        "_rng",
        "_corpus",
        "_first",
        "_window",
        "_window_bytes",
        "_prefix",
        "_suffix",
    )

    def __init__(self, index: int, spec: WorkloadSpec, corpus: str, session_id: str) -> None:
        self.index = index
        self.session_id = session_id
        self.turn = 0
        self._spec = spec
        self._rng = random.Random(spec.seed * 1_000_003 + index)
        self._corpus = corpus
        self._first = b""
        self._window: deque[bytes] = deque()
        self._window_bytes = 0
        self._prefix = (
            b'{"model":'
            + orjson.dumps(spec.model)
            + b',"max_tokens":%d,"messages":[' % spec.max_tokens
            + orjson.dumps({"role": "system", "content": SYSTEM_PROMPT})
            + b","
        )
        self._suffix = b'],"tools":' + orjson.dumps(TOOLS) + b"}"

    def _text(self, low: int, high: int) -> str:
        size = self._rng.randint(low, high)
        start = self._rng.randrange(0, len(self._corpus) - size)
        return f"[{self.session_id} t{self.turn}] " + self._corpus[start : start + size]

    def _append(self, piece: bytes) -> None:
        self._window.append(piece)
        self._window_bytes += len(piece) + 1
        # Drop whole turns from the front; the system prompt and first message stay.
        while self._window_bytes > self._spec.cap_bytes and len(self._window) > 1:
            self._window_bytes -= len(self._window.popleft()) + 1

    def _next_turn(self) -> None:
        if self.turn == 0:
            self._first = orjson.dumps({"role": "user", "content": self._text(40, 160)})
            return
        call_id = f"call_{self.index}_{self.turn}"
        if self.turn % self._spec.tool_every == 1:
            call = {
                "id": call_id,
                "type": "function",
                "function": {
                    "name": "search",
                    "arguments": orjson.dumps({"query": self._text(10, 40)}).decode(),
                },
            }
            assistant = {"role": "assistant", "content": None, "tool_calls": [call]}
            follow = {"role": "tool", "tool_call_id": call_id, "content": self._text(150, 700)}
        else:
            assistant = {"role": "assistant", "content": self._text(60, 300)}
            follow = {"role": "user", "content": self._text(30, 200)}
        self._append(orjson.dumps(assistant) + b"," + orjson.dumps(follow))

    def next_body(self) -> bytes:
        """The JSON body of this session's next request (advances the session one turn)."""
        self._next_turn()
        self.turn += 1
        pieces = [self._first, *self._window]
        return self._prefix + b",".join(pieces) + self._suffix

    @property
    def context_bytes(self) -> int:
        """Bytes of the appended turns currently kept (the first message excluded)."""
        return self._window_bytes


class Sessions:
    """``count`` conversations and the fixed request headers of each one."""

    def __init__(
        self,
        count: int,
        spec: WorkloadSpec,
        api_key: str,
        agent_types: tuple[str, ...] = ("coordinator", "worker"),
        run_tag: str = "soak",
    ) -> None:
        if count < 1:
            raise ValueError("at least one session")
        corpus = _corpus(spec.seed)
        self.conversations = [
            Conversation(i, spec, corpus, f"{run_tag}-{i:06d}") for i in range(count)
        ]
        self._heads = [
            request_head(api_key, agent_types[i % len(agent_types)], c.session_id)
            for i, c in enumerate(self.conversations)
        ]

    def __len__(self) -> int:
        return len(self.conversations)

    def request(self, number: int, idempotency_key: str | None = None) -> bytes:
        """Request ``number`` of the run: session ``number % count``, its next turn."""
        index = number % len(self.conversations)
        body = self.conversations[index].next_body()
        head = self._heads[index]
        if idempotency_key is not None:
            head += b"Idempotency-Key: " + idempotency_key.encode() + b"\r\n"
        return head + b"Content-Length: %d\r\n\r\n" % len(body) + body


def request_head(api_key: str, agent_type: str, session_id: str) -> bytes:
    """The request line and fixed headers (without ``Content-Length``)."""
    return (
        "POST /v1/chat/completions HTTP/1.1\r\n"
        "Host: 127.0.0.1\r\n"
        "Content-Type: application/json\r\n"
        f"Authorization: Bearer {api_key}\r\n"
        f"X-Agent-Type: {agent_type}\r\n"
        f"X-Session-Id: {session_id}\r\n"
    ).encode()
