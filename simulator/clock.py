"""Time sources for the emulator engine.

The engine never calls ``time`` or ``asyncio.sleep`` itself: it asks a
:class:`Clock`. Three are provided:

* :class:`ScaledClock` - model time runs ``speed`` times faster than wall time
  (``speed=1`` is real time). ``now()`` is model time.
* :class:`InstantClock` - sleeping advances a virtual clock and returns at once
  (``--instant``): every latency is still accounted, nobody waits.
* The discrete-event simulator drives the synchronous
  :class:`~simulator.scheduler.Scheduler` directly with its own virtual time,
  so it needs no clock at all.
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol


class Clock(Protocol):
    """Where the engine reads model time and waits for model durations."""

    def now(self) -> float:
        """Current model time in seconds (monotonic, arbitrary origin)."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Let ``seconds`` of model time pass."""
        ...


class ScaledClock:
    """Model time = wall time multiplied by ``speed`` (``speed > 0``)."""

    def __init__(self, speed: float = 1.0) -> None:
        if speed <= 0:
            raise ValueError(f"speed must be > 0, got {speed}")
        self.speed = speed
        self._origin = time.monotonic()

    def now(self) -> float:
        """Model seconds since the clock was made."""
        return (time.monotonic() - self._origin) * self.speed

    async def sleep(self, seconds: float) -> None:
        """Sleep ``seconds / speed`` of wall time."""
        await asyncio.sleep(max(0.0, seconds) / self.speed)


class InstantClock:
    """A virtual clock: ``sleep`` advances ``now`` and only yields to the event loop."""

    def __init__(self) -> None:
        self._now = 0.0

    def now(self) -> float:
        """Virtual seconds elapsed so far."""
        return self._now

    async def sleep(self, seconds: float) -> None:
        """Advance virtual time by ``seconds``; yield once so other tasks run."""
        self._now += max(0.0, seconds)
        await asyncio.sleep(0)
