"""uvicorn (uvloop + httptools) against granian serving the same FastAPI route.

Each server runs ``bench.server_app:app`` (POST route: orjson-parse the body, return
bytes) pinned to core 0 with one worker; the load generator (wrk when installed) runs
pinned to core 1. The canned upstream (``bench.upstream``) is measured the same way as
a reference: it must be far faster than anything under test. Servers are interleaved
round by round and every figure is the median over ``--repeat`` rounds; ratios are
against uvicorn measured in the same run.

    python -m bench.servers [--repeat 3] [--duration 5] [--warmup 2]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

from bench.loadgen import Load, Sample, Target, available_generator, median, run
from bench.machine import describe
from bench.processes import Children, free_port, python

SERVER_CPU = 0
LOAD_CPU = 1
APP = "bench.server_app:app"
BODY = json.dumps(
    {"model": "bench-model", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 16}
).encode()


def _uvicorn(port: int) -> list[str]:
    return [
        python(),
        "-m",
        "uvicorn",
        APP,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--loop",
        "uvloop",
        "--http",
        "httptools",
        "--no-access-log",
        "--log-level",
        "warning",
    ]


def _granian_binary() -> str | None:
    local = Path(sys.executable).with_name("granian")
    return str(local) if local.exists() else shutil.which("granian")


def _granian(port: int) -> list[str]:
    binary = _granian_binary()
    if binary is None:
        raise RuntimeError("granian is not installed (pip install granian)")
    return [
        binary,
        "--interface",
        "asgi",
        "--http",
        "1",
        "--no-ws",
        "--loop",
        "uvloop",
        "--workers",
        "1",
        "--runtime-mode",
        "st",
        "--runtime-threads",
        "1",
        "--no-access-log",
        "--log-level",
        "warning",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        APP,
    ]


def _upstream(port: int) -> list[str]:
    return [python(), "-m", "bench.upstream", "--port", str(port)]


SERVERS: dict[str, Callable[[int], list[str]]] = {
    "uvicorn (uvloop, httptools)": _uvicorn,
    "granian (asgi, uvloop, 1 thread)": _granian,
    "reference: bench.upstream (raw asyncio)": _upstream,
}


def compare(repeat: int, duration: float, warmup: float) -> str:
    """Run the whole comparison; return a markdown report."""
    machine = describe()
    names = [n for n in SERVERS if "granian" not in n or _granian_binary() is not None]
    runs: dict[tuple[str, int], list[Sample]] = {}
    root = Path(__file__).resolve().parent.parent
    with Children() as children:
        for round_ in range(repeat):
            order = names if round_ % 2 == 0 else list(reversed(names))
            for name in order:
                port = free_port()
                proc = children.start("server", SERVERS[name](port), cpu=SERVER_CPU, cwd=root)
                try:
                    children.wait_ready(name, f"http://127.0.0.1:{port}/health", proc=proc)
                    for connections in (1, 64):
                        sample = run(
                            Target(port, BODY), Load(connections, duration, warmup), cpu=LOAD_CPU
                        )
                        runs.setdefault((name, connections), []).append(sample)
                        print(
                            f"round {round_ + 1}/{repeat} {name:42} c={connections:<2} "
                            f"{sample.rps:9,.0f}/s p50 {sample.p50_ms:.3f} ms "
                            f"p99 {sample.p99_ms:.3f} ms errors {sample.errors}",
                            file=sys.stderr,
                            flush=True,
                        )
                finally:
                    children.stop(proc)
    results = {key: median(samples) for key, samples in runs.items()}
    base1, base64 = results[(names[0], 1)], results[(names[0], 64)]
    rows = [
        "| server | c=1 p50 (ms) | c=1 p99 (ms) | c=64 requests/s | c=64 p99 (ms) "
        "| p50 vs uvicorn | requests/s vs uvicorn | errors |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name in names:
        one, many = results[(name, 1)], results[(name, 64)]
        rows.append(
            f"| {name} | {one.p50_ms:.3f} | {one.p99_ms:.3f} | {many.rps:,.0f} "
            f"| {many.p99_ms:.3f} | {one.p50_ms / base1.p50_ms:.2f} "
            f"| {many.rps / base64.rps:.2f} | {one.errors + many.errors} |"
        )
    command = f"python -m bench.servers --repeat {repeat} --duration {duration:g} "
    command += f"--warmup {warmup:g}"
    return (
        f"Command: `{command}`; generator: {available_generator()} on core {LOAD_CPU}, "
        f"server on core {SERVER_CPU}; medians of {repeat} rounds of {duration:g} s after "
        f"{warmup:g} s warm-up.\n\nMachine: {machine}\n\n" + "\n".join(rows) + "\n"
    )


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description="uvicorn vs granian on one core")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    args = parser.parse_args(argv)
    print(compare(max(1, args.repeat), min(args.duration, 60.0), min(args.warmup, 30.0)))


if __name__ == "__main__":
    main()
