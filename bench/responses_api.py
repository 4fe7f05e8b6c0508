"""What the Responses API adds over chat completions, and what a stored chain saves.

One gateway process (auth off, SQLite under a fresh data directory) in front of one
emulated worker (``--instant``: a canned upstream without decode time). Measured:

- JSON at concurrency 1: p50 latency of ``/v1/chat/completions`` and of
  ``/v1/responses`` (``store: false``, and stored), interleaved request by request;
- a chain of ``--turns`` turns: the bytes the client sends with
  ``previous_response_id`` against sending the whole history each turn
  (``store: false``), and the prompt tokens the worker reports cached for each.

    python -m bench.responses_api [--requests 300] [--turns 20]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import yaml

from bench.processes import Children, free_port, python

MODEL = "llama-3.1-8b-instruct"
ASK = [{"role": "user", "content": "Tell me about Paris."}]
BODIES: dict[str, tuple[str, dict[str, Any]]] = {
    "chat": ("/v1/chat/completions", {"model": "m", "messages": ASK, "max_tokens": 8}),
    "responses": (
        "/v1/responses",
        {"model": "m", "input": ASK, "max_output_tokens": 8, "store": False},
    ),
    "responses stored": ("/v1/responses", {"model": "m", "input": ASK, "max_output_tokens": 8}),
}


def _start(children: Children, tmp: Path) -> str:
    worker_port, gateway_port = free_port(), free_port()
    worker = f"http://127.0.0.1:{worker_port}"
    emulate = [
        python(),
        "-m",
        "simulator",
        "emulate",
        "--gpu",
        "h100",
        "--model",
        MODEL,
        "--host",
        "127.0.0.1",
        "--port",
        str(worker_port),
        "--instant",
    ]
    proc = children.start("worker", emulate)
    children.wait_ready("worker", worker + "/health", proc=proc)
    config = {
        "auth": {"mode": "none"},
        "pools": {"main": {"gpu": "h100", "model": {"name": MODEL}, "workers": [worker]}},
        "models": {"m": {"route": "pool:main"}},
    }
    path = tmp / "tollway.yaml"
    path.write_text(yaml.safe_dump(config))
    serve = [
        python(),
        "-m",
        "gateway",
        "serve",
        "--config",
        str(path),
        "--port",
        str(gateway_port),
        "--log-level",
        "warning",
    ]
    proc = children.start("gateway", serve, env={"TOLLWAY_DATA_DIR": str(tmp / "data")})
    base = f"http://127.0.0.1:{gateway_port}"
    children.wait_ready("gateway", base + "/healthz", proc=proc)
    return base


def latency(client: httpx.Client, requests: int) -> dict[str, float]:
    """p50 milliseconds per kind, the kinds interleaved (their order rotating)."""
    times: dict[str, list[float]] = {kind: [] for kind in BODIES}
    kinds = list(BODIES)
    for i in range(requests):
        for kind in kinds[i % len(kinds) :] + kinds[: i % len(kinds)]:
            path, body = BODIES[kind]
            started = time.perf_counter()
            answer = client.post(path, json=body)
            times[kind].append(time.perf_counter() - started)
            answer.raise_for_status()
    return {kind: statistics.median(values) * 1000 for kind, values in times.items()}


def chain(client: httpx.Client, turns: int) -> dict[str, int]:
    """Bytes sent and prompt tokens (cached, all) over a chain, both ways."""
    out = dict.fromkeys(
        (
            "chained_bytes",
            "chained_cached",
            "chained_prompt",
            "full_bytes",
            "full_cached",
            "full_prompt",
        ),
        0,
    )
    previous: str | None = None
    history: list[dict[str, Any]] = []
    for turn in range(turns):
        item = {"role": "user", "content": f"Turn {turn}: and what about its museums?"}
        chained: dict[str, Any] = {"model": "m", "input": [item], "max_output_tokens": 32}
        if previous is not None:
            chained["previous_response_id"] = previous
        history.append(item)
        full = {"model": "m", "input": history, "max_output_tokens": 32, "store": False}
        for name, body in (("chained", chained), ("full", full)):
            raw = orjson.dumps(body)
            answer = client.post(
                "/v1/responses", content=raw, headers={"content-type": "application/json"}
            )
            answer.raise_for_status()
            data = answer.json()
            usage = data["usage"]
            out[f"{name}_bytes"] += len(raw)
            out[f"{name}_cached"] += usage["input_tokens_details"]["cached_tokens"]
            out[f"{name}_prompt"] += usage["input_tokens"]
            if name == "chained":
                previous = data["id"]
            else:
                history.extend(
                    {"role": "assistant", "content": o["content"][0]["text"]}
                    for o in data["output"]
                    if o["type"] == "message"
                )
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--turns", type=int, default=20)
    args = parser.parse_args(argv)
    with Children() as children, tempfile.TemporaryDirectory() as tmp:
        base = _start(children, Path(tmp))
        with httpx.Client(base_url=base, timeout=30) as client:
            latency(client, 30)  # warm up
            p50 = latency(client, args.requests)
            chained = chain(client, args.turns)
    base_ms = p50["chat"]
    for kind, ms in p50.items():
        print(f"c=1 p50 {kind:>17}: {ms:6.2f} ms ({ms - base_ms:+.2f} ms over chat)")
    print(
        f"{args.turns}-turn chain, previous_response_id: {chained['chained_bytes']} bytes "
        f"sent, {chained['chained_cached']}/{chained['chained_prompt']} prompt tokens cached"
    )
    print(
        f"{args.turns}-turn chain, whole history:        {chained['full_bytes']} bytes "
        f"sent, {chained['full_cached']}/{chained['full_prompt']} prompt tokens cached"
    )


if __name__ == "__main__":
    main(sys.argv[1:])
