"""The markdown report of a side-by-side run: tables, ratios, targets, context."""

from __future__ import annotations

import math
import re
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.peers.measure import HIGH_CONCURRENCY, Key, Measurement, Results
from bench.peers.systems import SIDE_CPU, SUT_CPU, System

RESULTS = Path(__file__).with_name("RESULTS.md")
TARGET_RPS_VS_PORTKEY = 3.0
TARGET_RPS_VS_LITELLM = 25.0
TARGET_ADDED_P50_VS_PORTKEY = 0.5
TARGET_TTFB_ADDED_MS = 0.5
CONTENTION_SPREAD = 0.2
MET = {True: "met", False: "**not met**"}


@dataclass(frozen=True)
class RunInfo:
    """What the report says about the run besides the numbers."""

    command: str
    repeat: int
    duration: float
    warmup: float
    machine: str
    versions: str
    load_end: str
    generator: str = "wrk"
    notes: tuple[str, ...] = ()


def rps(m: Measurement) -> float:
    return m.sample.rps


def p50(m: Measurement) -> float:
    return m.sample.p50_ms


def p99(m: Measurement) -> float:
    return m.sample.p99_ms


def ttfb50(m: Measurement) -> float:
    return m.sample.ttfb_p50_ms if m.sample.ttfb_p50_ms is not None else math.nan


def ttfb99(m: Measurement) -> float:
    return m.sample.ttfb_p99_ms if m.sample.ttfb_p99_ms is not None else math.nan


def cpu(m: Measurement) -> float:
    return m.cpu_us_per_request()


def helper_cpu(m: Measurement) -> float:
    return m.cpu_us_per_request(helpers=True)


def fmt(value: float, digits: int = 3, sign: bool = False) -> str:
    """A number for a table cell; ``-`` when there is none."""
    if value is None or math.isnan(value):
        return "-"
    return f"{value:{'+' if sign else ''},.{digits}f}"


def paired_ratio(results: Results, a: Key, b: Key) -> float:
    """Median over rounds of a / b for requests/s, each pair from the same round."""
    xs, ys = results.series(a, rps), results.series(b, rps)
    ratios = [x / y for x, y in zip(xs, ys, strict=False) if y]
    return statistics.median(ratios) if ratios else math.nan


def _json_table(results: Results, systems: Sequence[System]) -> list[str]:
    rows = [
        "| system | c=1 p50 ms | c=1 p99 ms | added p50 ms | added p99 ms "
        f"| c={HIGH_CONCURRENCY} requests/s | c={HIGH_CONCURRENCY} p99 ms "
        f"| CPU µs/request, c={HIGH_CONCURRENCY} | errors |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    base1 = ("direct", False, 1, "load")
    for s in systems:
        k1, k64 = (s.name, False, 1, "load"), (s.name, False, HIGH_CONCURRENCY, "load")
        if not results.has(k1):
            continue
        direct = s.name == "direct"
        rows.append(
            f"| {s.label} | {fmt(results.median(k1, p50))} | {fmt(results.median(k1, p99))} "
            f"| {'' if direct else fmt(results.paired(k1, base1, p50), sign=True)} "
            f"| {'' if direct else fmt(results.paired(k1, base1, p99), sign=True)} "
            f"| {fmt(results.median(k64, rps), 0)} | {fmt(results.median(k64, p99))} "
            f"| {fmt(results.median(k64, cpu), 1)}{_helper(results, s, k64)} "
            f"| {results.errors_of(k1) + results.errors_of(k64)} |"
        )
    return rows


def _helper(results: Results, system: System, key: Key) -> str:
    if not system.helper_pids:
        return ""
    return f" (+{fmt(results.median(key, helper_cpu), 1)} writer)"


def _stream_table(results: Results, systems: Sequence[System], events: dict[str, int]) -> list[str]:
    rows = [
        "| system | c=1 p50 ms | c=1 p99 ms | first byte p50 ms ¹ | added first byte p50 ms "
        f"| added first byte p99 ms | c={HIGH_CONCURRENCY} streams/s "
        f"| c={HIGH_CONCURRENCY} chunks/s ² | CPU µs/stream, c={HIGH_CONCURRENCY} | errors |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    base = ("direct", True, 1, "ttfb")
    for s in systems:
        k1, k64, kt = (
            (s.name, True, 1, "load"),
            (s.name, True, HIGH_CONCURRENCY, "load"),
            (s.name, True, 1, "ttfb"),
        )
        if not results.has(k1):
            continue
        direct = s.name == "direct"
        streams = results.median(k64, rps)
        errors = results.errors_of(k1) + results.errors_of(k64) + results.errors_of(kt)
        rows.append(
            f"| {s.label} | {fmt(results.median(k1, p50))} | {fmt(results.median(k1, p99))} "
            f"| {fmt(results.median(kt, ttfb50))} "
            f"| {'' if direct else fmt(results.paired(kt, base, ttfb50), sign=True)} "
            f"| {'' if direct else fmt(results.paired(kt, base, ttfb99), sign=True)} "
            f"| {fmt(streams, 0)} | {fmt(streams * events.get(s.name, 0), 0)} "
            f"| {fmt(results.median(k64, cpu), 1)}{_helper(results, s, k64)} | {errors} |"
        )
    return rows


def _ratio_rows(
    results: Results, peers: Sequence[System]
) -> tuple[list[str], dict[str, dict[str, float]]]:
    rows = [
        "| Tollway vs | JSON requests/s (Tollway / peer) | stream requests/s (Tollway / peer) "
        "| JSON added p50 (Tollway / peer) | stream added first byte p50 (Tollway / peer) "
        f"| CPU per JSON request, c={HIGH_CONCURRENCY} (peer / Tollway) |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    ratios: dict[str, dict[str, float]] = {}
    j64, s64 = (False, HIGH_CONCURRENCY, "load"), (True, HIGH_CONCURRENCY, "load")
    d1, dt = ("direct", False, 1, "load"), ("direct", True, 1, "ttfb")
    for peer in peers:
        t_added = results.paired(("tollway", False, 1, "load"), d1, p50)
        p_added = results.paired((peer.name, False, 1, "load"), d1, p50)
        t_ttfb = results.paired(("tollway", True, 1, "ttfb"), dt, ttfb50)
        p_ttfb = results.paired((peer.name, True, 1, "ttfb"), dt, ttfb50)
        t_cpu = results.median(("tollway", *j64), cpu)
        r = {
            "json_rps": paired_ratio(results, ("tollway", *j64), (peer.name, *j64)),
            "stream_rps": paired_ratio(results, ("tollway", *s64), (peer.name, *s64)),
            "added_p50": t_added / p_added if p_added else math.nan,
            "added_ttfb": t_ttfb / p_ttfb if p_ttfb else math.nan,
            "cpu": results.median((peer.name, *j64), cpu) / t_cpu if t_cpu else math.nan,
        }
        ratios[peer.name] = r
        rows.append(
            f"| {peer.label} | {fmt(r['json_rps'], 2)}x | {fmt(r['stream_rps'], 2)}x "
            f"| {fmt(r['added_p50'], 2)} | {fmt(r['added_ttfb'], 2)} | {fmt(r['cpu'], 2)}x |"
        )
    return rows, ratios


def _targets(results: Results, ratios: dict[str, dict[str, float]]) -> list[str]:
    lines = []
    checks = [
        (
            "portkey",
            "json_rps",
            TARGET_RPS_VS_PORTKEY,
            "≥",
            "Tollway requests/s (JSON, c=64) vs Portkey's",
        ),
        (
            "litellm",
            "json_rps",
            TARGET_RPS_VS_LITELLM,
            "≥",
            "Tollway requests/s (JSON, c=64) vs LiteLLM's",
        ),
        (
            "portkey",
            "added_p50",
            TARGET_ADDED_P50_VS_PORTKEY,
            "≤",
            "Tollway added p50 (JSON, c=1) vs Portkey's",
        ),
    ]
    for peer, field, target, op, label in checks:
        value = ratios.get(peer, {}).get(field, math.nan)
        if math.isnan(value):
            lines.append(f"- {label}: not measured (target {op} {target:g}x).")
            continue
        ok = value >= target if op == "≥" else value <= target
        lines.append(f"- {label}: **{value:.2f}x** (target {op} {target:g}x: {MET[ok]}).")
    ttfb = results.paired(("tollway", True, 1, "ttfb"), ("direct", True, 1, "ttfb"), ttfb50)
    if not math.isnan(ttfb):
        lines.append(
            f"- Tollway added time to first byte (stream, c=1, p50): **{ttfb:.3f} ms** "
            f"(target ≤ {TARGET_TTFB_ADDED_MS} ms: {MET[ttfb <= TARGET_TTFB_ADDED_MS]})."
        )
    return lines


def report(
    results: Results,
    systems: Sequence[System],
    events: dict[str, int],
    info: RunInfo,
) -> str:
    """The whole markdown section."""
    peers = [s for s in systems if s.name not in ("direct", "tollway")]
    ratio_rows, ratios = _ratio_rows(results, [p for p in peers if p.name not in results.failures])
    spread = results.spread(("direct", False, HIGH_CONCURRENCY, "load"))
    steadiness = (
        f"Spread of the upstream's own requests/s at c={HIGH_CONCURRENCY} across rounds "
        f"(max − min over median): {spread:.0%}; load average at the end: {info.load_end}."
    )
    if spread > CONTENTION_SPREAD:
        steadiness += (
            f" **Over {CONTENTION_SPREAD:.0%}: other work on the machine moved the numbers; "
            "repeat the run before trusting the absolute figures.**"
        )
    lines = [
        "## Tollway, LiteLLM's proxy and Portkey's gateway, side by side",
        "",
        f"Command: `{info.command}` (from the repository root, in the project's virtualenv, "
        "after `python -m bench.peers setup`).",
        "",
        f"Method: the canned upstream `bench.upstream` on core {SIDE_CPU}; each system under "
        f"test alone on core {SUT_CPU} (all of them started once and left running, idle while "
        f"another is measured); load generator on core {SIDE_CPU}. Request: "
        '`{"model": "bench-model", "messages": [{"role": "user", "content": "hello"}], '
        '"max_tokens": 16}`, streaming adds `"stream": true` (and '
        '`"stream_options": {"include_usage": true}` for every system but Tollway, which asks '
        "the upstream for it itself, so the upstream sends the same bytes in every case). "
        f"Each figure is the median of {info.repeat} rounds of {info.duration:g} s after "
        f"{info.warmup:g} s of warm-up; the order of the systems rotates from round to round. "
        f"Concurrency 1 is measured by `{info.generator}` for a fixed duration. At "
        f"c={HIGH_CONCURRENCY}, the warm-up (fixed duration) sizes a fixed-count run "
        "(`bench.peers.burst`: 64 keep-alive connections share N requests, N chosen to last "
        "about the duration, at least 3 per connection; requests/s = N / time from first "
        "request to last answer): a fixed-duration run from idle counts nothing until the "
        "first wave of 64 answers, about 64 / (requests/s) seconds, which would understate "
        "a slow system by more the slower it is. Between runs every system finishes what a "
        "stopped generator left in flight (until it uses under 5 % of a core). CPU per "
        "request = the system's process tree utime + stime over the run / requests. "
        "Added = system − upstream direct, the median of same-round differences; ratios "
        "Tollway / peer are medians of same-round ratios (requests/s) or ratios of the "
        "added medians (latency).",
        "",
        f"Machine: {info.machine}",
        "",
        f"Versions: {info.versions}",
        "",
        steadiness,
        "",
        f"The systems not being measured sat idle on core {SUT_CPU}: at most "
        f"{results.bystander_share():.1%} of a core went to them during any one measurement.",
        "",
        "Configurations:",
        "",
        *[f"- **{s.label}**: {s.settings}" for s in systems],
        "",
        "### JSON (non-streaming)",
        "",
        *_json_table(results, systems),
        "",
        "### Streaming (SSE)",
        "",
        *_stream_table(results, systems, events),
        "",
        "¹ Time to the first body byte, measured by the Python generator (wrk cannot see "
        "inside a response); its absolute numbers include the generator's own cost, so "
        "compare the added column.",
        "² Streams/s × the SSE events of one answer through that system ("
        + ", ".join(f"{k} {v}" for k, v in events.items())
        + ", `[DONE]` included).",
        "",
        "### Tollway against each peer",
        "",
        *ratio_rows,
        "",
        *_targets(results, ratios),
    ]
    if results.failures:
        lines += ["", "Failures:", ""]
        lines += [f"- {name}: {why}" for name, why in results.failures.items()]
    if info.notes:
        lines += ["", *[f"- {note}" for note in info.notes]]
    return "\n".join(lines) + "\n"


HEADER = (
    "# Tollway and its peers: results\n\n"
    "Written by `python -m bench.peers run --write` and `python -m bench.peers memory --write`; "
    "each command replaces its own section.\n"
)


def write_section(name: str, section: str, path: Path = RESULTS) -> None:
    """Put ``section`` between this name's markers in ``path`` (appended the first time)."""
    start, end = f"<!-- peers:{name}:start -->", f"<!-- peers:{name}:end -->"
    text = path.read_text(encoding="utf-8") if path.exists() else HEADER
    block = f"{start}\n{section}{end}"
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _: block, text)
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    path.write_text(text, encoding="utf-8")
