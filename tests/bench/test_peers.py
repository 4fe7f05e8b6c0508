"""The pure parts of ``bench.peers``: ordering, statistics, report, traffic shape.

Nothing here starts a process or needs the peers installed.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.loadgen import Sample, Target
from bench.peers.burst import request_bytes
from bench.peers.measure import HIGH_CONCURRENCY, Measurement, Results, burst_size, rotated
from bench.peers.memory import conversation, schedule
from bench.peers.report import RunInfo, paired_ratio, report, write_section
from bench.peers.systems import System, stream_events
from bench.peers.tollway import metering_settings, tollway_config
from gateway.config import parse_config


def _sample(rps: float, p50: float, ttfb: float | None = None, requests: int = 100) -> Sample:
    return Sample(
        generator="wrk",
        connections=1,
        requests=requests,
        errors=0,
        duration_s=1.0,
        rps=rps,
        p50_ms=p50,
        p90_ms=p50,
        p99_ms=p50 * 2,
        mean_ms=p50,
        ttfb_p50_ms=ttfb,
        ttfb_p99_ms=None if ttfb is None else ttfb * 2,
    )


def _system(name: str) -> System:
    return System(name, name.title(), 1, 1, settings=f"{name} settings")


def _results() -> Results:
    results = Results()
    figures = {
        # name: (c=1 p50 ms, c=64 requests/s, stream first byte ms)
        "direct": (0.02, 40_000.0, 0.03),
        "tollway": (0.40, 3_000.0, 0.33),
        "litellm": (20.0, 60.0, 25.0),
        "portkey": (2.0, 500.0, 30.0),
    }
    for _ in range(3):
        for name, (p50, rps, ttfb) in figures.items():
            for stream in (False, True):
                results.add((name, stream, 1, "load"), Measurement(_sample(1 / p50, p50), 0.1))
                results.add(
                    (name, stream, HIGH_CONCURRENCY, "load"), Measurement(_sample(rps, 10.0), 0.2)
                )
            results.add((name, True, 1, "ttfb"), Measurement(_sample(100, 1.0, ttfb), 0.1))
    return results


def test_rotated_moves_each_system_to_the_front_in_turn() -> None:
    systems = [_system(n) for n in ("direct", "tollway", "litellm", "portkey")]
    firsts = [rotated(systems, r)[0].name for r in range(4)]
    assert firsts == ["direct", "tollway", "litellm", "portkey"]
    assert sorted(s.name for s in rotated(systems, 5)) == sorted(s.name for s in systems)


def test_paired_differences_and_ratios_use_same_round_pairs() -> None:
    results = Results()
    for direct, system in ((1.0, 3.0), (2.0, 3.0), (10.0, 11.0)):
        results.add(("direct", False, 1, "load"), Measurement(_sample(direct, direct), 0.0))
        results.add(("tollway", False, 1, "load"), Measurement(_sample(system, system), 0.0))
    p50 = lambda m: m.sample.p50_ms  # noqa: E731
    assert results.paired(("tollway", False, 1, "load"), ("direct", False, 1, "load"), p50) == 1.0
    ratio = paired_ratio(results, ("tollway", False, 1, "load"), ("direct", False, 1, "load"))
    assert ratio == pytest.approx(1.5)
    assert results.spread(("direct", False, 1, "load")) == pytest.approx(9.0 / 2.0)


def test_cpu_per_request_in_microseconds() -> None:
    m = Measurement(_sample(1000, 1.0, requests=2000), cpu_s=0.5, helper_cpu_s=0.1)
    assert m.cpu_us_per_request() == pytest.approx(250.0)
    assert m.cpu_us_per_request(helpers=True) == pytest.approx(50.0)


def test_burst_size_follows_the_warm_up_rate_with_a_floor() -> None:
    assert burst_size(_sample(0.0, 1.0, requests=2000), 5.0, 64) == 10_000
    assert burst_size(_sample(0.0, 1.0, requests=0), 5.0, 64) == 3 * 64


def test_request_bytes_carry_authorization_and_extra_headers() -> None:
    target = Target(8000, b"{}", authorization="Bearer k", headers=(("x-a", "1"),))
    raw = request_bytes(target)
    assert raw.startswith(b"POST /v1/chat/completions HTTP/1.1\r\n")
    assert b"\r\nAuthorization: Bearer k\r\n" in raw and b"\r\nx-a: 1\r\n" in raw
    assert raw.endswith(b"Content-Length: 2\r\nAuthorization: Bearer k\r\nx-a: 1\r\n\r\n{}")


def test_report_has_tables_ratios_and_targets() -> None:
    systems = [_system(n) for n in ("direct", "tollway", "litellm", "portkey")]
    info = RunInfo("python -m bench.peers run", 3, 5.0, 2.0, "machine", "versions", "0 0 0")
    text = report(_results(), systems, {n: 10 for n in ("direct", "tollway")}, info)
    assert "| Tollway | 0.400 |" in text
    assert "| Litellm | 50.00x | 50.00x |" in text
    assert "| Portkey | 6.00x | 6.00x |" in text
    assert "target ≥ 3x: met" in text
    assert "target ≥ 25x: met" in text
    # Added p50: Tollway 0.38 ms, Portkey 1.98 ms -> 0.19x.
    assert "**0.19x** (target ≤ 0.5x: met)" in text
    assert "**0.300 ms** (target ≤ 0.5 ms: met)" in text


def test_report_lists_failures() -> None:
    results = _results()
    results.failures["portkey"] = "not measured: node missing"
    systems = [_system(n) for n in ("direct", "tollway", "litellm")]
    info = RunInfo("cmd", 3, 5.0, 2.0, "machine", "versions", "0 0 0")
    text = report(results, systems, {}, info)
    assert "- portkey: not measured: node missing" in text
    assert "vs Portkey's: not measured" in text


def test_write_section_replaces_only_its_own_section(tmp_path: Path) -> None:
    path = tmp_path / "RESULTS.md"
    write_section("run", "first run\n", path)
    write_section("memory", "memory\n", path)
    write_section("run", "second run\n", path)
    text = path.read_text()
    assert "second run" in text and "first run" not in text and "memory" in text
    assert text.index("second run") < text.index("memory\n")


def test_sessions_interleave_and_conversations_grow() -> None:
    pairs = schedule(7, 3)
    assert pairs == [(0, 0), (1, 0), (2, 0), (0, 1), (1, 1), (2, 1), (0, 2)]
    lengths = [len(conversation(5, turn)) for turn in range(4)]
    assert lengths == [2, 4, 6, 8]
    assert conversation(5, 2)[-1]["role"] == "user"
    assert conversation(5, 0)[1]["content"] != conversation(6, 0)[1]["content"]


def test_stream_events() -> None:
    body = b'data: {"a": 1}\n\n: comment\n\ndata: [DONE]\n\n'
    assert stream_events(body) == [b'{"a": 1}', b"[DONE]"]


def test_tollway_config_is_valid_with_every_feature_on(tmp_path: Path) -> None:
    pricing = tmp_path / "pricing.yaml"
    pricing.write_text("books: []\n")
    config = parse_config(tollway_config(30000, "admin-token", pricing, "production"))
    assert config.pools["bench"].policy == "cache_aware"
    assert config.metering.journal is True  # billed requests survive a killed gateway
    assert config.metering.writer == "external"
    assert config.auth.mode == "keys" and config.auth.keys == []
    assert metering_settings("default") == {"durable_before_response": True, "writer": "inline"}
