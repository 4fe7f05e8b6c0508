"""Conversations for the compression benchmark: tau-bench, BFCL, synthetic long ones."""

from __future__ import annotations

import ast
import importlib
import json
from pathlib import Path
from typing import Any

from policies.conversation import Message

ROOT = Path(__file__).resolve().parents[2]
TAU_BENCH = ROOT / ".." / "shared" / "datasets" / "tau-bench" / "gpt-4o-airline.json"


def tau_trajectories() -> list[list[Message]]:
    """The 200 tau-bench airline trajectories (OpenAI messages with tool calls)."""
    data: list[dict[str, Any]] = json.loads(TAU_BENCH.read_text())
    return [entry["traj"] for entry in data]


def turn_requests(trajectory: list[Message]) -> list[list[Message]]:
    """One request per assistant turn: the conversation up to that turn."""
    return [
        trajectory[:index]
        for index, message in enumerate(trajectory)
        if message["role"] == "assistant" and index > 0
    ]


def _call(text: str) -> tuple[str, dict[str, Any]]:
    node = ast.parse(text.strip(), mode="eval").body
    if not isinstance(node, ast.Call):
        raise ValueError(text)
    func = node.func
    name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "call")
    arguments: dict[str, Any] = {
        kw.arg or "kwargs": ast.literal_eval(kw.value) for kw in node.keywords
    }
    if node.args:
        arguments["args"] = [ast.literal_eval(arg) for arg in node.args]
    return name, arguments


def bfcl_trajectories(limit: int = 100) -> tuple[list[list[Message]], str]:
    """Multi-turn BFCL entries executed into trajectories, and a note on what was used.

    BFCL ships questions, initial states and ground-truth calls, not
    trajectories: each ground-truth call is executed with BFCL's own
    executor, one assistant tool call per step, its real output as the tool
    result. Empty when ``bfcl-eval`` is not installed.
    """
    try:
        utils = importlib.import_module("bfcl_eval.eval_checker.multi_turn_eval.multi_turn_utils")
        constants = importlib.import_module("bfcl_eval.constants.executable_backend_config")
    except ImportError:
        return [], "bfcl-eval is not installed"
    package = Path(importlib.import_module("bfcl_eval").__file__ or "").parent / "data"
    trajectories: list[list[Message]] = []
    for category, long in (("multi_turn_base", False), ("multi_turn_long_context", True)):
        lines = (package / f"BFCL_v4_{category}.json").read_text().splitlines()
        answers = (package / "possible_answer" / f"BFCL_v4_{category}.json").read_text()
        truth = {e["id"]: e["ground_truth"] for e in map(json.loads, answers.splitlines())}
        for line in lines[: limit // 2]:
            entry = json.loads(line)
            try:
                trajectories.append(
                    _bfcl_entry(entry, truth[entry["id"]], long, package, utils, constants)
                )
            except Exception:  # noqa: BLE001 - a benchmark input we cannot replay is skipped
                continue
    return trajectories, f"bfcl-eval multi_turn_base + multi_turn_long_context, {limit // 2} each"


def _bfcl_entry(
    entry: dict[str, Any],
    truth: list[list[str]],
    long: bool,
    package: Path,
    utils: Any,
    constants: Any,
) -> list[Message]:
    docs = []
    for name in entry["involved_classes"]:
        module = constants.CLASS_FILE_PATH_MAPPING[name].rsplit(".", 1)[1]
        path = package / "multi_turn_func_doc" / f"{module}.json"
        docs += [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    messages: list[Message] = [
        {"role": "system", "content": "You are an agent. Tools:\n" + json.dumps(docs)}
    ]
    serial = 0
    for turn, calls in enumerate(truth):
        messages += entry["question"][turn] if turn < len(entry["question"]) else []
        results, _ = utils.execute_multi_turn_func_call(
            calls, entry["initial_config"], entry["involved_classes"], "bench", entry["id"], long
        )
        for call, result in zip(calls, results, strict=True):
            name, arguments = _call(call)
            serial += 1
            call_id = f"call_{serial}"
            messages.append(
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": call_id,
                            "type": "function",
                            "function": {"name": name, "arguments": json.dumps(arguments)},
                        }
                    ],
                }
            )
            messages.append({"role": "tool", "tool_call_id": call_id, "content": str(result)})
        messages.append({"role": "assistant", "content": "Done."})
    return messages


def long_conversation(
    trajectories: list[list[Message]], target_tokens: int, count: Any
) -> list[Message]:
    """A valid conversation of about ``target_tokens`` (within a few percent):
    tau-bench turns back to back, every fourth tool result repeated to about
    24,000 characters (~6K tokens, a long file or log)."""
    messages: list[Message] = list(trajectories[0][:2])
    total = count(messages)
    index = results = 0
    while True:
        trajectory = trajectories[index % len(trajectories)]
        index += 1
        turn: list[Message] = []
        for message in trajectory[1:]:
            if message["role"] == "tool":
                results += 1
                if results % 4 == 0:
                    content = message["content"] + "\n"
                    repeated = content * max(1, 24_000 // len(content))
                    message = {**message, "content": repeated}
            turn.append(message)
        if turn[-1]["role"] == "tool":
            turn.append({"role": "assistant", "content": "Continuing."})
        turn.append({"role": "user", "content": f"Next task {index}."})
        added = count(turn)
        if total + added > target_tokens * 1.02:
            if total >= target_tokens * 0.98:
                return messages
            continue
        messages += turn
        total += added
