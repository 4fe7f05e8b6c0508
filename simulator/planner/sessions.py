"""One agent session: its pre-drawn turns and the context it resends each turn.

Tokens are simulated as integer ids so the radix cache sees real prefixes: the
agent type's system prompt is one shared run of ids, every message a fresh run.
A turn's prompt is the system prompt followed by the kept messages; the
assistant's output is appended after the turn, so the next prompt extends the
previous one and hits the cache, unless compression rewrote the middle.
"""

from __future__ import annotations

import random
from array import array
from collections.abc import Sequence
from dataclasses import dataclass, field

from simulator.planner.sampling import draw, draw_int
from simulator.planner.schema import AgentType, Compression


class TokenIds:
    """Hands out fresh, never-repeated runs of token ids."""

    def __init__(self) -> None:
        self._cursor = 1

    def fresh(self, n: int) -> array[int]:
        """``n`` ids nobody has used."""
        start = self._cursor
        self._cursor += n
        return array("q", range(start, start + n))


@dataclass(frozen=True, slots=True)
class SessionPlan:
    """Everything random about a session, drawn when it arrives (common random numbers)."""

    first_turn_tokens: int
    turn_input_tokens: tuple[int, ...]
    output_tokens: tuple[int, ...]
    tool_waits: tuple[float, ...]

    @property
    def turns(self) -> int:
        """Model calls in the session."""
        return len(self.output_tokens)


def draw_plan(rng: random.Random, agent: AgentType) -> SessionPlan:
    """Draw one session of ``agent``."""
    turns = draw_int(rng, agent.turns, 1)
    return SessionPlan(
        first_turn_tokens=draw_int(rng, agent.first_turn_tokens, 1),
        turn_input_tokens=tuple(
            draw_int(rng, agent.turn_input_tokens, 1) for _ in range(turns - 1)
        ),
        output_tokens=tuple(draw_int(rng, agent.output_tokens, 1) for _ in range(turns)),
        tool_waits=tuple(max(0.0, draw(rng, agent.tool_wait_s)) for _ in range(turns - 1)),
    )


@dataclass(slots=True)
class _Block:
    kind: str  # "task", "tool" or "output"
    turn: int
    ids: array[int]
    masked: bool = False


@dataclass(eq=False)
class Session:
    """A running session: which turn is next and the conversation so far."""

    sid: str
    agent: str
    pool: str
    priority: int
    plan: SessionPlan
    system: array[int]
    compression: Compression
    arrival_time: float
    turn: int = 0
    blocks: list[_Block] = field(default_factory=list)
    failed: bool = False
    finished: bool = False

    def next_prompt(self, ids: TokenIds) -> array[int]:
        """Append this turn's new input, apply compression, return the prompt to send."""
        if self.turn == 0:
            self.blocks.append(_Block("task", 0, ids.fresh(self.plan.first_turn_tokens)))
        else:
            n = self.plan.turn_input_tokens[self.turn - 1]
            self.blocks.append(_Block("tool", self.turn, ids.fresh(n)))
        self._compress(ids)
        prompt = array("q", self.system)
        for block in self.blocks:
            prompt.extend(block.ids)
        return prompt

    def record_output(self, output_ids: Sequence[int]) -> None:
        """The assistant's answer joins the conversation; the turn is done."""
        ids = output_ids if isinstance(output_ids, array) else array("q", output_ids)
        self.blocks.append(_Block("output", self.turn, ids))
        self.turn += 1
        if self.turn >= self.plan.turns:
            self.finished = True

    def _compress(self, ids: TokenIds) -> None:
        c = self.compression
        if c.mask_tool_results_after is not None:
            for block in self.blocks:
                old = self.turn - block.turn >= c.mask_tool_results_after
                if block.kind == "tool" and old and not block.masked:
                    block.ids = ids.fresh(max(1, round(len(block.ids) * c.mask_ratio)))
                    block.masked = True
        if c.max_context_tokens is not None:
            budget = c.max_context_tokens - len(self.system)
            total = sum(len(b.ids) for b in self.blocks)
            while total > budget and len(self.blocks) > 1:
                total -= len(self.blocks.pop(0).ids)
