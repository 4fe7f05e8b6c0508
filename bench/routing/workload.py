"""Agent sessions to replay: tau-bench airline trajectories and a synthetic tool loop.

A :class:`Session` is an ordered list of turns; each turn is the conversation up
to one assistant message (OpenAI messages), so every turn's prompt extends the
previous one. Both sources are deterministic for a given seed.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

Message = dict[str, Any]

ROOT = Path(__file__).resolve().parents[2]
TAU_BENCH = ROOT / ".." / "shared" / "datasets" / "tau-bench" / "gpt-4o-airline.json"

#: Rough characters per token, for the synthetic generator's sizes only.
CHARS_PER_TOKEN = 4


@dataclass(frozen=True, slots=True)
class Session:
    """One agent session: an id, its source, its turns and the tool wait before each."""

    sid: str
    kind: str
    turns: tuple[tuple[Message, ...], ...]
    tool_waits_s: tuple[float, ...] = field(default=())

    @property
    def prompt_chars(self) -> int:
        """Characters of JSON sent over the whole session (a size hint)."""
        return sum(len(json.dumps(turn)) for turn in self.turns)


def turn_prefixes(trajectory: list[Message]) -> list[tuple[Message, ...]]:
    """One request per assistant turn: the conversation up to that turn."""
    return [
        tuple(trajectory[:index])
        for index, message in enumerate(trajectory)
        if message.get("role") == "assistant" and index > 0
    ]


def tau_sessions(
    limit: int, seed: int, tool_wait_s: tuple[float, float] = (0.05, 0.3)
) -> list[Session]:
    """Up to ``limit`` tau-bench airline sessions, in a seeded random order."""
    data: list[dict[str, Any]] = json.loads(TAU_BENCH.read_text())
    rng = random.Random(seed)
    order = list(range(len(data)))
    rng.shuffle(order)
    sessions = []
    for index in order[:limit]:
        entry = data[index]
        turns = turn_prefixes(entry["traj"])
        if not turns:
            continue
        waits = tuple(round(rng.uniform(*tool_wait_s), 3) for _ in turns)
        sid = f"tau-{entry['task_id']}-{entry.get('trial', 0)}-{index}"
        sessions.append(Session(sid, "tau", tuple(turns), waits))
    return sessions


_WORDS = (
    "account alpha batch buffer cache client commit config context cursor delta deploy "
    "error event field filter handler index kernel latency ledger module node offset "
    "packet parser queue record region replica request result router schema segment "
    "server shard socket status stream tenant thread token trace update value vector "
    "worker bytes error_code timestamp duration user_id order_id region_id host port"
).split()

_AGENTS = {
    "coder": (
        "You are a coding agent working in a large repository. Use the tools to read files, "
        "search the code and run the tests; make the smallest change that fixes the issue."
    ),
    "researcher": (
        "You are a research agent. Use web search and page fetches to gather sources, quote "
        "them exactly and keep a running list of citations."
    ),
    "analyst": (
        "You are a data analyst agent. Query the warehouse with SQL, inspect the result sets "
        "and explain the numbers with the queries that produced them."
    ),
    "ops": (
        "You are an operations agent. Read logs and metrics, correlate incidents across "
        "services and propose a remediation with the evidence."
    ),
}

_TOOLS = {
    "coder": ("read_file", "grep", "run_tests"),
    "researcher": ("web_search", "fetch_page"),
    "analyst": ("run_sql", "describe_table"),
    "ops": ("query_logs", "get_metrics", "list_incidents"),
}


def _policy_text(agent: str, tokens: int) -> str:
    """A long, agent-type-wide system prompt (shared by every session of the type)."""
    rng = random.Random(f"policy:{agent}")
    lines = [_AGENTS[agent], "", "## Rules"]
    while sum(len(line) for line in lines) < tokens * CHARS_PER_TOKEN:
        lines.append(
            f"- {rng.choice(_WORDS).capitalize()} " + " ".join(rng.choices(_WORDS, k=14)) + "."
        )
    return "\n".join(lines)


def _tool_output(rng: random.Random, tokens: int) -> str:
    """A tool result of about ``tokens`` tokens: log lines / rows of pseudo-random fields."""
    out: list[str] = []
    size = 0
    row = 0
    while size < tokens * CHARS_PER_TOKEN:
        fields = " ".join(f"{w}={rng.randint(0, 99999)}" for w in rng.choices(_WORDS, k=6))
        line = f"{row:05d} {rng.choice(_WORDS)}: {fields}"
        out.append(line)
        size += len(line) + 1
        row += 1
    return "\n".join(out)


def synthetic_sessions(
    count: int,
    seed: int,
    *,
    turns: tuple[int, int] = (6, 12),
    tool_output_tokens: tuple[int, int] = (1000, 2500),
    system_tokens: int = 600,
    tool_wait_s: tuple[float, float] = (0.1, 0.5),
) -> list[Session]:
    """``count`` tool-loop sessions whose tool outputs are thousands of tokens long.

    Each session belongs to one of four agent types (a shared system prompt per
    type), starts from a unique user task, then loops: an assistant tool call, a
    long tool result. One request per assistant turn, so the context grows by a
    tool output every turn.
    """
    rng = random.Random(seed)
    policies = {agent: _policy_text(agent, system_tokens) for agent in _AGENTS}
    sessions = []
    for number in range(count):
        agent = rng.choice(sorted(_AGENTS))
        task = (
            f"Task {number}: investigate {rng.choice(_WORDS)} {rng.choice(_WORDS)} in "
            f"{rng.choice(_WORDS)}-{rng.randint(1, 999)} and report what changed since "
            f"{rng.randint(1, 28)} May; " + " ".join(rng.choices(_WORDS, k=20)) + "."
        )
        conversation: list[Message] = [
            {"role": "system", "content": policies[agent]},
            {"role": "user", "content": task},
        ]
        requests: list[tuple[Message, ...]] = []
        for step in range(rng.randint(*turns)):
            requests.append(tuple(conversation))
            tool = rng.choice(_TOOLS[agent])
            call_id = f"call_{number}_{step}"
            arguments = json.dumps({"query": " ".join(rng.choices(_WORDS, k=4)), "step": step})
            conversation.append(
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": call_id,
                            "type": "function",
                            "function": {"name": tool, "arguments": arguments},
                        }
                    ],
                }
            )
            conversation.append(
                {
                    "role": "tool",
                    "tool_call_id": call_id,
                    "content": _tool_output(rng, rng.randint(*tool_output_tokens)),
                }
            )
        requests.append(tuple(conversation))
        waits = tuple(round(rng.uniform(*tool_wait_s), 3) for _ in requests)
        sessions.append(Session(f"syn-{seed}-{number}", "synthetic", tuple(requests), waits))
    return sessions
