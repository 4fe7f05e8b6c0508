"""Latency and throughput the gateway adds on its hot path.

1. Start the canned upstream (``bench.upstream``) pinned to core 1.
2. Start the gateway (``python -m gateway serve``) pinned to core 0, one uvicorn
   worker, with a generated config whose only pool points at the upstream and whose
   only API key is a fresh random one; wait for ``GET /readyz`` to answer 200 and check
   one JSON and one streamed answer through it.
3. Measure, with the load generator pinned to core 1 (wrk when installed), the
   upstream directly and then through the gateway, round after round (order alternating):
   concurrency 1 gives latency p50/p99, concurrency 64 gives requests/s; non-streaming
   and streaming; for streaming at concurrency 1 the Python generator also measures time
   to the first body byte.
4. Print medians over ``--repeat`` rounds as a markdown table (direct, gateway, added =
   gateway - direct, ratio gateway / direct) and, with ``--write``, put it into
   ``docs/benchmarks.md`` between the ``gateway-overhead`` markers.

Every child process is stopped on exit, also on an error, Ctrl-C or SIGTERM.

    python -m bench.gateway_overhead [--repeat 3] [--duration 5] [--warmup 2] [--write]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import secrets
import statistics
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from bench.loadgen import Generator, Load, Sample, Target, available_generator, median, run
from bench.machine import describe, load_average
from bench.processes import Children, exit_on_interrupt, free_port, python

GATEWAY_CPU = 0
UPSTREAM_CPU = 1
LOAD_CPU = 1
MODEL = "bench-model"
TARGET_ADDED_P50_MS = 0.5
TARGET_RPS = 3000.0
CONTENTION_SPREAD = 0.2
ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "benchmarks.md"
START_MARK = "<!-- gateway-overhead:start -->"
END_MARK = "<!-- gateway-overhead:end -->"
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def request_body(stream: bool, include_usage: bool = False) -> bytes:
    """The benchmark's chat-completions request body."""
    body: dict[str, object] = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "hello"}],
        "max_tokens": 16,
    }
    if stream:
        body["stream"] = True
        if include_usage:
            body["stream_options"] = {"include_usage": True}
    return json.dumps(body).encode()


def gateway_config(upstream_port: int, api_key: str) -> dict[str, Any]:
    """The gateway config: one key, one pool of one worker (the upstream), one model."""
    return {
        "auth": {
            "keys": [
                {
                    "tenant": "bench",
                    "name": "bench",
                    "key_sha256": hashlib.sha256(api_key.encode()).hexdigest(),
                }
            ]
        },
        "pools": {
            "bench": {
                "gpu": "h100",
                "model": {
                    "name": "llama-3.1-8b-instruct",
                    "weights_dtype": "bf16",
                    "kv_dtype": "bf16",
                    "tp": 1,
                },
                "workers": [f"http://127.0.0.1:{upstream_port}"],
            }
        },
        "models": {MODEL: {"route": "pool:bench"}},
    }


def gateway_argv(launcher: str, config: Path, port: int, log_level: str) -> list[str]:
    """How to start the gateway: its command line, or uvicorn on its app factory."""
    if launcher == "uvicorn":
        # What ``tollway serve`` runs, minus the command line (uvloop + httptools).
        return [
            python(),
            "-m",
            "uvicorn",
            "gateway.server:app_from_environment",
            "--factory",
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
            log_level,
        ]
    return [
        python(),
        "-m",
        "gateway",
        "serve",
        "--config",
        str(config),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--log-level",
        log_level,
    ]


def merge(base: dict[str, Any], overlay: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``overlay`` merged in, mappings recursively."""
    merged = dict(base)
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _check_answers(port: int, api_key: str) -> str:
    """One JSON and one streamed request through the gateway; fail loudly if wrong."""
    url = f"http://127.0.0.1:{port}/v1/chat/completions"
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {api_key}"}
    notes = []
    for stream in (False, True):
        req = urllib.request.Request(url, data=request_body(stream), headers=headers)
        try:
            with _OPENER.open(req, timeout=10) as resp:
                status, body = resp.status, resp.read()
                route = resp.headers.get("x-tollway-route")
        except urllib.error.HTTPError as exc:
            raise RuntimeError(f"gateway answered {exc.code}: {exc.read()[:500]!r}") from exc
        if status != 200:
            raise RuntimeError(f"gateway answered {status}: {body[:500]!r}")
        if stream:
            if not body.rstrip().endswith(b"data: [DONE]"):
                raise RuntimeError(f"stream did not end with [DONE]: {body[-300:]!r}")
            notes.append(f"stream ok ({len(body)} bytes)")
        else:
            answer = json.loads(body)
            if not answer.get("choices"):
                raise RuntimeError(f"no choices in the gateway's answer: {body[:500]!r}")
            notes.append(f"json ok (usage {answer.get('usage')}, x-tollway-route {route})")
    return "; ".join(notes)


@dataclass
class _Results:
    samples: dict[tuple[str, bool, int, str], list[Sample]]

    def add(self, key: tuple[str, bool, int, str], sample: Sample) -> None:
        self.samples.setdefault(key, []).append(sample)

    def get(self, where: str, stream: bool, connections: int, kind: str = "load") -> Sample:
        return median(self.samples[(where, stream, connections, kind)])

    def spread(self, where: str, stream: bool, connections: int) -> float:
        """(max - min) / median of requests/s across rounds: a contention alarm."""
        rps = [s.rps for s in self.samples[(where, stream, connections, "load")]]
        mid = statistics.median(rps)
        return (max(rps) - min(rps)) / mid if mid else 0.0

    def has(self, where: str, stream: bool, connections: int, kind: str) -> bool:
        return (where, stream, connections, kind) in self.samples


def measure(
    repeat: int,
    duration: float,
    warmup: float,
    generator: Generator,
    log_level: str,
    modes: tuple[bool, ...] = (False, True),
    launcher: str = "cli",
    overlay: dict[str, Any] | None = None,
) -> tuple[_Results, str]:
    """Start the upstream and the gateway, measure, stop them; return samples and notes."""
    results = _Results({})
    api_key = "tw-bench-" + secrets.token_hex(16)
    chosen = available_generator(generator)
    with Children() as children:
        upstream_port = free_port()
        upstream = children.start(
            "upstream",
            [python(), "-m", "bench.upstream", "--port", str(upstream_port)],
            cpu=UPSTREAM_CPU,
            cwd=ROOT,
        )
        children.wait_ready("upstream", f"http://127.0.0.1:{upstream_port}/health", proc=upstream)

        config_path = children.log_dir / "tollway-bench.yaml"
        config = merge(gateway_config(upstream_port, api_key), overlay or {})
        config_path.write_text(yaml.safe_dump(config))
        gateway_port = free_port()
        gateway = children.start(
            "gateway",
            gateway_argv(launcher, config_path, gateway_port, log_level),
            cpu=GATEWAY_CPU,
            # A fresh data directory: no state from earlier runs, nothing left behind.
            env={
                "TOLLWAY_CONFIG": str(config_path),
                "TOLLWAY_DATA_DIR": str(children.log_dir / "data"),
            },
            cwd=ROOT,
        )
        children.wait_ready(
            "gateway", f"http://127.0.0.1:{gateway_port}/readyz", timeout=60, proc=gateway
        )
        try:
            notes = _check_answers(gateway_port, api_key)
        except RuntimeError as exc:
            tail = children.log_tail("gateway", 40)
            raise RuntimeError(f"{exc}\n\ngateway log ({children.log_dir}):\n{tail}") from None
        print(f"gateway ready: {notes}", file=sys.stderr, flush=True)

        auth = f"Bearer {api_key}"
        ports = {"direct": upstream_port, "gateway": gateway_port}
        for round_ in range(repeat):
            order = ("direct", "gateway") if round_ % 2 == 0 else ("gateway", "direct")
            for stream in modes:
                # Direct calls ask for the usage chunk, as the gateway does upstream.
                bodies = {
                    "direct": request_body(stream, include_usage=True),
                    "gateway": request_body(stream),
                }
                for where in order:
                    target = Target(ports[where], bodies[where], authorization=auth)
                    for connections in (1, 64):
                        load = Load(connections, duration, warmup)
                        sample = run(target, load, chosen, cpu=LOAD_CPU)
                        results.add((where, stream, connections, "load"), sample)
                        _progress(round_, repeat, where, stream, "load", sample)
                    if stream:
                        sample = run(target, Load(1, duration, warmup), cpu=LOAD_CPU, ttfb=True)
                        results.add((where, stream, 1, "ttfb"), sample)
                        _progress(round_, repeat, where, stream, "ttfb", sample)
                if gateway.poll() is not None:
                    raise RuntimeError(f"gateway died:\n{children.log_tail('gateway')}")
        tail = children.log_tail("gateway", 15)
        if "Traceback" in tail or "ERROR" in tail:
            notes += f"\n\ngateway log tail:\n{tail}"
    return results, notes


def _progress(round_: int, repeat: int, where: str, stream: bool, kind: str, s: Sample) -> None:
    extra = f" ttfb p50 {s.ttfb_p50_ms:.3f} ms" if s.ttfb_p50_ms is not None else ""
    print(
        f"round {round_ + 1}/{repeat} {where:7} stream={stream!s:5} {kind:4} c={s.connections:<2} "
        f"[{s.generator}] {s.rps:9,.0f}/s p50 {s.p50_ms:.3f} ms p99 {s.p99_ms:.3f} ms"
        f"{extra} errors {s.errors}",
        file=sys.stderr,
        flush=True,
    )


def _row(label: str, direct: float, gateway: float, unit: str, digits: int = 3) -> str:
    added = gateway - direct
    ratio = gateway / direct if direct else float("nan")
    fmt = f",.{digits}f"
    return (
        f"| {label} | {direct:{fmt}} {unit} | {gateway:{fmt}} {unit} | {added:+{fmt}} {unit} "
        f"| {ratio:.2f} |"
    )


def report(
    results: _Results, repeat: int, duration: float, warmup: float, machine: str, command: str
) -> str:
    """The markdown section: table, targets, command and machine."""
    generator = results.get("direct", False, 1).generator
    rows = [
        "| measurement | direct | through gateway | added | gateway / direct |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    errors = 0
    for stream in (False, True):
        if not results.has("direct", stream, 1, "load"):
            continue
        kind = "stream" if stream else "JSON"
        d1, g1 = results.get("direct", stream, 1), results.get("gateway", stream, 1)
        d64, g64 = results.get("direct", stream, 64), results.get("gateway", stream, 64)
        errors += d1.errors + g1.errors + d64.errors + g64.errors
        rows.append(_row(f"{kind}, c=1, latency p50", d1.p50_ms, g1.p50_ms, "ms"))
        rows.append(_row(f"{kind}, c=1, latency p99", d1.p99_ms, g1.p99_ms, "ms"))
        if results.has("direct", stream, 1, "ttfb"):
            dt, gt = (
                results.get("direct", stream, 1, "ttfb"),
                results.get("gateway", stream, 1, "ttfb"),
            )
            assert dt.ttfb_p50_ms is not None and gt.ttfb_p50_ms is not None
            assert dt.ttfb_p99_ms is not None and gt.ttfb_p99_ms is not None
            rows.append(
                _row(f"{kind}, c=1, first body byte p50 ¹", dt.ttfb_p50_ms, gt.ttfb_p50_ms, "ms")
            )
            rows.append(
                _row(f"{kind}, c=1, first body byte p99 ¹", dt.ttfb_p99_ms, gt.ttfb_p99_ms, "ms")
            )
        rows.append(_row(f"{kind}, c=64, requests/s", d64.rps, g64.rps, "/s", 0))
        rows.append(_row(f"{kind}, c=64, latency p99", d64.p99_ms, g64.p99_ms, "ms"))

    spreads = [results.spread(w, False, 64) for w in ("direct", "gateway")]
    steadiness = (
        f"Spread of requests/s at c=64 across rounds (max − min over median): direct "
        f"{spreads[0]:.0%}, gateway {spreads[1]:.0%}; load average at the end: "
        f"{load_average()}."
    )
    if spreads[0] > CONTENTION_SPREAD:
        steadiness += (
            f" **The upstream alone moved by over {CONTENTION_SPREAD:.0%}: the machine was "
            "busy with other work; repeat the run before trusting these numbers.**"
        )
    elif spreads[1] > CONTENTION_SPREAD:
        steadiness += (
            f" The upstream alone was steady but the gateway moved by over "
            f"{CONTENTION_SPREAD:.0%}: pauses inside the gateway (see its p99) or other "
            "work on its core."
        )
    added_p50 = results.get("gateway", False, 1).p50_ms - results.get("direct", False, 1).p50_ms
    rps = results.get("gateway", False, 64).rps
    met = {True: "met", False: "**not met**"}
    lines = [
        f"Command: `{command}` (from the repository root, in the project's virtualenv).",
        "",
        f"Method: upstream `bench.upstream` on core {UPSTREAM_CPU}, gateway (one uvicorn "
        f"worker) on core {GATEWAY_CPU}, load generator `{generator}` on core {LOAD_CPU}; "
        f"each figure is the median of {repeat} rounds of {duration:g} s after {warmup:g} s "
        f"of warm-up, direct and gateway alternating within each round. Added = gateway − "
        f"direct. Failed or non-2xx requests in all runs: {errors}.",
        "",
        f"Machine: {machine}",
        "",
        steadiness,
        "",
        *rows,
        "",
        "¹ Time to the first body byte, measured by the Python generator (wrk cannot); "
        "its absolute numbers include the generator's own cost, so compare the added column.",
        "",
        f"- Added p50 latency, JSON, c=1: **{added_p50:.3f} ms** "
        f"(target ≤ {TARGET_ADDED_P50_MS} ms: {met[added_p50 <= TARGET_ADDED_P50_MS]}).",
        f"- Gateway throughput, JSON, c=64, one core: **{rps:,.0f} requests/s** "
        f"(target ≥ {TARGET_RPS:,.0f}/s: {met[rps >= TARGET_RPS]}).",
    ]
    return "\n".join(lines) + "\n"


def write_doc(section: str, doc: Path = DOC) -> None:
    """Replace the text between the gateway-overhead markers in ``doc``."""
    text = doc.read_text(encoding="utf-8")
    pattern = re.compile(re.escape(START_MARK) + r".*?" + re.escape(END_MARK), re.S)
    if not pattern.search(text):
        raise RuntimeError(f"{doc} has no {START_MARK} ... {END_MARK} markers")
    replacement = f"{START_MARK}\n{section}{END_MARK}"
    doc.write_text(pattern.sub(lambda _: replacement, text), encoding="utf-8")


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description="Latency and throughput the gateway adds")
    parser.add_argument("--repeat", type=int, default=3, help="rounds; medians are reported")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per measurement")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds before each one")
    parser.add_argument("--generator", choices=("auto", "wrk", "python"), default="auto")
    parser.add_argument("--no-stream", action="store_true", help="skip streaming requests")
    parser.add_argument("--log-level", default="warning", help="the gateway's log level")
    parser.add_argument(
        "--launcher",
        choices=("cli", "uvicorn"),
        default="cli",
        help="start the gateway with `python -m gateway serve` (default) or uvicorn directly",
    )
    parser.add_argument(
        "--config-overlay",
        type=Path,
        help="YAML merged over the generated gateway config (to measure a variant)",
    )
    parser.add_argument("--write", action="store_true", help=f"update {DOC.relative_to(ROOT)}")
    args = parser.parse_args(argv)
    repeat = max(1, min(args.repeat, 20))
    duration = min(max(args.duration, 1.0), 60.0)
    warmup = min(max(args.warmup, 0.0), 30.0)
    machine = describe()
    modes = (False,) if args.no_stream else (False, True)
    overlay: dict[str, Any] = {}
    if args.config_overlay is not None:
        loaded = yaml.safe_load(args.config_overlay.read_text(encoding="utf-8"))
        if not isinstance(loaded, dict):
            parser.error("--config-overlay must hold a YAML mapping")
        overlay = loaded
    with exit_on_interrupt():
        results, notes = measure(
            repeat, duration, warmup, args.generator, args.log_level, modes, args.launcher, overlay
        )
    command = f"python -m bench.gateway_overhead --repeat {repeat} --duration {duration:g} "
    command += f"--warmup {warmup:g}"
    if args.generator != "auto":
        command += f" --generator {args.generator}"
    if args.no_stream:
        command += " --no-stream"
    if args.config_overlay is not None:
        command += f" --config-overlay {args.config_overlay.name}"
        command += f" ({json.dumps(overlay, separators=(',', ':'))})"
    if args.launcher != "cli":
        command += f" --launcher {args.launcher}"
    section = report(results, repeat, duration, warmup, machine, command)
    print(section)
    if "gateway log tail" in notes:
        print(notes, file=sys.stderr)
    if args.write:
        write_doc(section)
        print(f"written to {DOC.relative_to(ROOT)}", file=sys.stderr)


if __name__ == "__main__":
    main()
