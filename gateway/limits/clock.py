"""Time sources: milliseconds since the Unix epoch, injectable for tests."""

from __future__ import annotations

import time
from collections.abc import Callable

#: A clock returns the current time in whole milliseconds since the Unix epoch.
Clock = Callable[[], int]


def wall_clock_ms() -> int:
    """This machine's wall clock in milliseconds."""
    return time.time_ns() // 1_000_000


class ManualClock:
    """A clock that moves only when told to (tests, simulations)."""

    def __init__(self, start_ms: int) -> None:
        self.now_ms = start_ms

    def __call__(self) -> int:
        return self.now_ms

    def advance(self, ms: int) -> None:
        """Move the clock forward by ``ms`` milliseconds."""
        self.now_ms += ms
