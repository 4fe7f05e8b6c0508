"""Resident memory of the processes under test: sampling, warm-up, growth.

``RssSampler`` reads ``VmRSS`` from ``/proc/<pid>/status`` once a second (in a
thread, so a busy event loop does not skew the schedule) together with how many
requests had completed, so every sample can be placed on the request axis.
``summarize`` turns the samples into what the soak reports: RSS at the end of
warm-up, at the end, the peak, growth between the first two, and the least-squares
slope after warm-up (KiB per 100,000 requests), which a single noisy sample
cannot fake.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from bench.procfs import read_rss_kib


@dataclass(frozen=True, slots=True)
class RssSample:
    """One reading: seconds since the start, requests completed, RSS (KiB) per pid."""

    elapsed_s: float
    completed: int
    rss_kib: tuple[int, ...]

    @property
    def total_kib(self) -> int:
        """RSS summed over the sampled processes."""
        return sum(self.rss_kib)


class RssSampler:
    """Samples the RSS of ``pids`` every ``interval_s`` in a background thread."""

    def __init__(
        self, pids: Sequence[int], completed: Callable[[], int], interval_s: float = 1.0
    ) -> None:
        self.pids = tuple(pids)
        self.interval_s = interval_s
        self.samples: list[RssSample] = []
        self._completed = completed
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
        self._start = time.monotonic()

    def sample(self) -> RssSample:
        """Take one sample now (also used for the final reading)."""
        reading = RssSample(
            time.monotonic() - self._start,
            self._completed(),
            tuple(read_rss_kib(pid) for pid in self.pids),
        )
        self.samples.append(reading)
        return reading

    def _run(self) -> None:
        next_at = time.monotonic()
        while not self._stop.is_set():
            try:
                self.sample()
            except (OSError, ValueError):
                return  # the process exited; the driver notices and reports it
            next_at += self.interval_s
            self._stop.wait(max(0.0, next_at - time.monotonic()))

    def __enter__(self) -> RssSampler:
        self._start = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def growth(warmup_kib: float, final_kib: float) -> float:
    """(final - warm-up) / warm-up, as a fraction (0.05 is 5 %)."""
    if warmup_kib <= 0:
        raise ValueError("warm-up RSS must be positive")
    return (final_kib - warmup_kib) / warmup_kib


def slope_per(samples: Sequence[RssSample], per_requests: int = 100_000) -> float | None:
    """Least-squares slope of total RSS (KiB) over completed requests, per ``per_requests``."""
    points = [(s.completed, s.total_kib) for s in samples]
    if len(points) < 3:
        return None
    n = len(points)
    mean_x = sum(x for x, _ in points) / n
    mean_y = sum(y for _, y in points) / n
    var = sum((x - mean_x) ** 2 for x, _ in points)
    if var == 0:
        return None
    cov = sum((x - mean_x) * (y - mean_y) for x, y in points)
    return cov / var * per_requests


@dataclass(frozen=True, slots=True)
class MemorySummary:
    """What the soak reports about memory."""

    warmup_kib: int
    final_kib: int
    peak_kib: int
    start_kib: int
    growth: float
    slope_kib_per_100k: float | None
    samples: int
    warmup_at_requests: int

    def passed(self, limit: float) -> bool:
        """Growth from the end of warm-up to the end within ``limit`` (a fraction)."""
        return self.growth <= limit


def summarize(samples: Sequence[RssSample], warmup_requests: int) -> MemorySummary:
    """Warm-up, final and peak RSS, growth and the post-warm-up slope.

    The warm-up reading is the first sample taken once ``warmup_requests`` requests
    had completed; the final reading is the last sample.
    """
    if not samples:
        raise ValueError("no RSS samples")
    after = [s for s in samples if s.completed >= warmup_requests]
    if not after:
        raise ValueError(f"no sample after the warm-up ({warmup_requests} requests)")
    warm, final = after[0], samples[-1]
    return MemorySummary(
        warmup_kib=warm.total_kib,
        final_kib=final.total_kib,
        peak_kib=max(s.total_kib for s in samples),
        start_kib=samples[0].total_kib,
        growth=growth(warm.total_kib, final.total_kib),
        slope_kib_per_100k=slope_per(after),
        samples=len(samples),
        warmup_at_requests=warm.completed,
    )


def mib(kib: float) -> str:
    """KiB as MiB with one decimal."""
    return f"{kib / 1024:,.1f} MiB"
