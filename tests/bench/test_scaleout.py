"""The pure parts of ``bench.scaleout``: CPU accounting, the exact-limit check,
efficiency figures and the report. Nothing here starts a process."""

from __future__ import annotations

import os
from collections import Counter

import pytest

from bench.scaleout.exact import ExactOutcome, allowed_range, outcome, request
from bench.scaleout.report import capacity, cpu_efficiency, markdown, scaling_efficiency
from bench.scaleout.run import CONFIGS, Sample, ScaleOptions, ScaleResult
from bench.soak.cpu import CpuSnapshot, CpuUsage, parse_proc_stat, usage
from bench.soak.driver import LoadResult

PROC_STAT = """cpu  100 5 50 800 20 1 2 3 7 0
cpu0 50 2 25 400 10 0 1 1 0 0
intr 12345
"""


def test_machine_ticks_count_everything_but_idle_and_iowait() -> None:
    busy, total = parse_proc_stat(PROC_STAT)
    assert total == 100 + 5 + 50 + 800 + 20 + 1 + 2 + 3  # guest time is already in user
    assert busy == total - 800 - 20


def test_proc_stat_without_the_aggregate_line_is_an_error() -> None:
    with pytest.raises(ValueError):
        parse_proc_stat("cpu0 1 2 3 4\n")


def test_usage_is_the_difference_per_group_with_new_pids_from_zero() -> None:
    before = CpuSnapshot(10.0, {"gateway": {1: 5.0, 2: 1.0}, "redis": {9: 3.0}}, (1000, 4000))
    after = CpuSnapshot(
        12.0, {"gateway": {1: 6.5, 2: 1.5, 3: 0.25}, "redis": {9: 3.5}}, (1000 + 350, 4000 + 400)
    )
    spent = usage(before, after)
    assert spent.wall_s == pytest.approx(2.0)
    assert spent.groups["gateway"] == pytest.approx(2.25)
    assert spent.per_pid["gateway"] == {1: 1.5, 2: 0.5, 3: 0.25}
    assert spent.cores("gateway") == pytest.approx(1.125)
    ticks = os.sysconf("SC_CLK_TCK")  # usage() turns the machine's ticks into seconds
    assert spent.machine_busy_s == pytest.approx(350 / ticks)
    assert spent.others_s == pytest.approx(max(0.0, 350 / ticks - 2.75))


def test_allowed_range_is_exact_within_one_refill_interval() -> None:
    assert allowed_range(50, 400, 0.3) == (50, 50)  # 50 per minute: one more after 1.2 s
    assert allowed_range(50, 400, 1.2) == (50, 51)
    assert allowed_range(50, 400, 60.0) == (50, 100)
    assert allowed_range(50, 30, 0.1) == (30, 30)  # demand below the limit: all pass


def _load(ok: int, limited: int, other: int = 0, elapsed: float = 0.3) -> LoadResult:
    statuses = Counter({200: ok, 429: limited})
    if other:
        statuses[500] = other
    total = ok + limited + other
    return LoadResult(sent=total, completed=total, statuses=statuses, elapsed_s=elapsed)


def test_exactly_the_limit_passes_and_the_rest_is_429() -> None:
    found = outcome(50, 400, _load(50, 350), [0.1, 0.1])
    assert found.exact and found.verdict == "exact"


@pytest.mark.parametrize(
    ("ok", "limited", "other"),
    [(51, 349, 0), (49, 351, 0), (50, 349, 1)],
    ids=["one too many", "one too few", "a server error"],
)
def test_anything_else_is_wrong(ok: int, limited: int, other: int) -> None:
    assert not outcome(50, 400, _load(ok, limited, other), [0.1]).exact


def test_the_hammering_request_is_well_formed() -> None:
    raw = request("tw-k", "agent", 3)
    head, body = raw.split(b"\r\n\r\n", 1)
    assert b"Authorization: Bearer tw-k\r\n" in head
    assert b"X-Session-Id: exact-3\r\n" in head
    assert f"Content-Length: {len(body)}".encode() in head


def test_efficiency_figures() -> None:
    assert scaling_efficiency(3000, 2000, 2) == pytest.approx(0.75)
    assert cpu_efficiency(400, 500) == pytest.approx(0.8)
    assert capacity(2, 500) == pytest.approx(4000)
    assert capacity(1, 0) != capacity(1, 0)  # nan when nothing was measured


def _sample(config: str, rps: float, gateway_s: float, pids: tuple[int, ...]) -> Sample:
    done = int(rps * 10)
    result = LoadResult(sent=done, completed=done, statuses=Counter({200: done}), elapsed_s=10.0)
    per_pid = {pid: gateway_s / len(pids) for pid in pids}
    groups = {"gateway": gateway_s, "load generator": 0.5, "upstreams": 0.3, "redis": 0.4}
    cpu = CpuUsage(10.0, {**groups, "postgres": 0.1}, {"gateway": per_pid}, 19.0, 2)
    return Sample(config, result, cpu, pids)


def test_the_report_shows_throughput_cpu_efficiency_and_limit_counts() -> None:
    result = ScaleResult(ScaleOptions(repeat=1))
    result.samples = {
        "one": [_sample("one", 2000, 8.0, (1,))],
        "workers": [_sample("workers", 2500, 12.5, (2, 3))],
        "replicas": [_sample("replicas", 2600, 12.0, (4, 5))],
    }
    result.exact = {
        c.name: [ExactOutcome(50, 400, 50, 350, 0, 0.3, (0.1,) * c.processes)] for c in CONFIGS
    }
    text = markdown(result, "python -m bench.scaleout", "a machine.")
    assert "| 1 process | 2,000 | 1.00× | 400 µs | 0.80 |" in text
    assert "| 2 processes (`serve --workers 2`) | 2,500 | 1.25× | 500 µs | 0.62 + 0.62 |" in text
    assert "| 2 processes (`serve --workers 2`) | 2 | 1.25× | 62% | 80% | 4,000 req/s |" in text
    assert "(every phase exact)" in text
    assert "| 2 replicas (one Redis) | 50 | 400 | 50 | 350 | 0 | 0.30 s | 50 | exact |" in text
