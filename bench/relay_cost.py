"""The stream relay's own CPU per stream, in process, for one or more source trees.

``bench.ab`` measures a whole gateway, where this machine's noise is several times
the relay's cost; this runs only ``gateway.relay`` (``read_opening`` when the tree
has it, then :class:`~gateway.relay.StreamRelay` to the end) over a canned upstream
stream in a loop, on one core, and reports CPU time (``time.process_time``) per
stream. Each tree runs in its own process (its ``gateway`` and ``backends``
imported from it), trees alternating, ``--repeat`` times; medians.

Streams (``--shape``): ``bench`` is what ``bench.upstream`` sends (an
OpenAI-shaped stream of 10 events, usage included, arriving as one block);
``sglang`` is SGLang 0.5.6's shape (every delta key, unset ones null, and
``"usage":null`` on every chunk), 34 events, one block each.

    python -m bench.relay_cost --trees /tmp/base . [--shape sglang] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson

MODEL = "bench-model"


def _event(payload: object) -> bytes:
    return b"data: " + (payload if isinstance(payload, bytes) else orjson.dumps(payload)) + b"\n\n"


def blocks(shape: str) -> list[bytes]:
    """The upstream's byte blocks for one stream of ``shape``."""
    usage = {"prompt_tokens": 5, "completion_tokens": 6, "total_tokens": 11}
    if shape == "bench":
        base = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 1}
        base["model"] = MODEL

        def choice(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
            return {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}

        pieces = ("Hello", " from", " the", " canned", " upstream", ".")
        events = [_event({**base, "choices": [choice({"role": "assistant", "content": ""})]})]
        events += [_event({**base, "choices": [choice({"content": p})]}) for p in pieces]
        events.append(_event({**base, "choices": [choice({}, "stop")]}))
        events.append(_event({**base, "choices": [], "usage": usage}))
        return [b"".join([*events, _event(b"[DONE]")])]
    sglang = {"id": "0123456789abcdef0123456789abcdef", "object": "chat.completion.chunk"}
    sglang |= {"created": 1733600000, "model": MODEL}

    def chunk(finish: str | None = None, **delta: Any) -> bytes:
        full = {"role": None, "content": None, "reasoning_content": None, "tool_calls": None}
        choice = {"index": 0, "delta": full | delta, "logprobs": None}
        choice |= {"finish_reason": finish, "matched_stop": None}
        return _event({**sglang, "choices": [choice], "usage": None})

    out = [chunk(role="assistant", content="")]
    out += [chunk(content=f" tok{i}") for i in range(30)]
    out += [chunk("stop"), _event({**sglang, "choices": [], "usage": usage}), _event(b"[DONE]")]
    return out


async def _measure(shape: str, streams: int, rounds: int) -> float:
    from backends.base import UpstreamResponse
    from gateway import relay

    canned = blocks(shape)

    async def upstream() -> AsyncIterator[bytes]:
        for block in canned:
            yield block

    async def before_done(outcome: object) -> None:
        return None

    async def one() -> None:
        response = UpstreamResponse(status=200, route="pool:p/w0", worker="w0", stream=upstream())
        options: dict[str, Any] = {}
        if hasattr(relay, "read_opening"):
            options["opening"] = await relay.read_opening(response, relay.DEFAULT_MAX_EVENT_BYTES)
            options["on_first_byte"] = lambda outcome: None
        stream = relay.StreamRelay(
            response,
            include_usage=False,
            on_usage=lambda outcome: {"cost": 0.1},
            before_done=before_done,
            on_close=lambda outcome, cancelled: None,
            **options,
        )
        async for _ in stream:
            pass
        if hasattr(stream, "aclose"):
            await stream.aclose()

    for _ in range(streams // 2):
        await one()
    results = []
    for _ in range(rounds):
        started = time.process_time()
        for _ in range(streams):
            await one()
        results.append((time.process_time() - started) / streams * 1e6)
    return statistics.median(results)


def _child(shape: str, streams: int) -> None:
    import uvloop

    print(uvloop.run(_measure(shape, streams, 5)))


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trees", type=Path, nargs="+", required=True)
    parser.add_argument("--shape", choices=("bench", "sglang"), default="bench")
    parser.add_argument("--streams", type=int, default=0, help="per round (default by shape)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--cpu", type=int, default=0, help="the core to pin to")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    streams = args.streams or (4000 if args.shape == "bench" else 800)
    if args.child:
        _child(args.shape, streams)
        return
    runs: dict[Path, list[float]] = {tree: [] for tree in args.trees}
    for _ in range(args.repeat):
        for tree in args.trees:
            # This file as a script: the child's packages all come from ``tree``.
            command = [sys.executable, str(Path(__file__).resolve()), "--child", "--trees", "."]
            command += ["--shape", args.shape, "--streams", str(streams)]
            env = {**os.environ, "PYTHONPATH": str(tree.resolve())}
            out = subprocess.run(
                ["taskset", "-c", str(args.cpu), *command],
                env=env,
                cwd=tree,
                check=True,
                capture_output=True,
                text=True,
            ).stdout
            runs[tree].append(float(out.strip().splitlines()[-1]))
    first = statistics.median(runs[args.trees[0]])
    print(f"shape {args.shape}, {streams} streams per round; load {os.getloadavg()[0]:.2f}")
    for tree, values in runs.items():
        median = statistics.median(values)
        print(f"{tree}: {median:.1f} µs CPU per stream ({median / first:.2f}×)")


if __name__ == "__main__":
    main()
