"""Worker selection policies: distributions on known workloads, affinity, overflow."""

from __future__ import annotations

from collections import Counter

from backends.sglang.config import HealthConfig
from backends.sglang.picking import CacheAware, LeastLoad, PowerOfTwo, RoundRobin, make_picker
from backends.sglang.worker import Worker


def workers(n: int = 4) -> list[Worker]:
    return [Worker(url=f"http://10.0.0.{i}:30000", health=HealthConfig()) for i in range(n)]


def test_round_robin_spreads_evenly() -> None:
    ws, picker = workers(), RoundRobin()
    firsts = Counter(picker.order(ws, None)[0].url for _ in range(400))
    assert set(firsts.values()) == {100}


def test_least_load_prefers_the_idle_worker() -> None:
    ws = workers()
    for w, load in zip(ws, (5, 0, 3, 9), strict=True):
        w.in_flight = load
    assert [w.in_flight for w in LeastLoad().order(ws, None)] == [0, 3, 5, 9]
    ws[1].others_requests = 2  # other replicas' requests count too
    ws[3].in_flight = 0
    assert LeastLoad().order(ws, None)[0] is ws[3]


def test_a_drained_worker_is_not_held_busy_by_a_stale_report() -> None:
    worker = workers(1)[0]
    worker.in_flight = 10
    worker.reported_requests = 12  # scraped while our 10 ran: 2 from other replicas
    worker.others_requests = max(0, worker.reported_requests - worker.in_flight)
    worker.in_flight = 0  # ours finished since; the report is now stale
    assert worker.load == 2


def test_power_of_two_avoids_a_hot_worker() -> None:
    ws = workers()
    ws[0].in_flight = 50
    picker = PowerOfTwo(seed=7)
    firsts = Counter(picker.order(ws, None)[0].url for _ in range(600))
    assert firsts[ws[0].url] == 0  # it can only win a draw against itself, never sampled twice
    assert all(firsts[w.url] > 120 for w in ws[1:])


def test_cache_aware_is_the_same_on_every_replica_and_balanced() -> None:
    ws = workers()
    replicas = [CacheAware(), CacheAware(), CacheAware()]
    keys = [f"s:session-{i}" for i in range(2000)]
    chosen = {k: replicas[0].order(ws, k)[0].url for k in keys}
    for replica in replicas[1:]:
        assert all(replica.order(ws, k)[0].url == chosen[k] for k in keys)
    share = Counter(chosen.values())
    assert all(350 <= share[w.url] <= 650 for w in ws), share  # ~500 each


def test_cache_aware_overflows_a_hot_worker_and_comes_back() -> None:
    ws, picker = workers(), CacheAware(overflow_factor=1.25)
    key = "s:hot-session"
    home = picker.order(ws, key)[0]
    home.in_flight = 20  # far above the mean
    assert picker.order(ws, key)[0] is not home
    assert picker.order(ws, key)[-1] is home
    home.in_flight = 1
    assert picker.order(ws, key)[0] is home


def test_a_dead_workers_sessions_move_and_only_they_move() -> None:
    ws, picker = workers(), CacheAware()
    keys = [f"s:{i}" for i in range(500)]
    before = {k: picker.order(ws, k)[0].url for k in keys}
    dead = ws[2]
    alive = [w for w in ws if w is not dead]
    during = {k: picker.order(alive, k)[0].url for k in keys}
    for k in keys:
        if before[k] == dead.url:
            assert during[k] != dead.url
        else:
            assert during[k] == before[k]  # nobody else moved
    after = {k: picker.order(ws, k)[0].url for k in keys}
    assert after == before  # they come back when it returns


def test_no_affinity_means_least_load() -> None:
    ws = workers()
    ws[0].in_flight = 3
    assert make_picker("cache_aware").order(ws, None)[0] is not ws[0]
