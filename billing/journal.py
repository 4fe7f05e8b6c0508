"""The usage journal: a record is on local disk before its response finishes,
without the request waiting for Redis or an ``fsync``.

With ``metering.journal`` the request path writes each usage record to this
process's journal segment (one ``write`` into the page cache: it survives the
process being killed, not the host crashing) and hands it to the usage buffer
(the Redis stream, else the fsynced spool) in the background: the records written
in one turn of the event loop leave together, in one batch (one task and one
pipelined write to the stream, however many requests finished in that turn). A
segment stays locked (``flock``) by its process until every record in it is in the
buffer, then it is deleted. Segments whose process died unlocked are *replayed*: every
record goes to the buffer again, and the ledger's unique request id makes any
record that had already arrived a no-op. Replays run at start and every
``replay_interval_s``, in every replica on the host.

Frames and segment draining are the spool's (:mod:`billing.spool`).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from billing.spool import drain_segment, frame

log = logging.getLogger("tollway.metering")

_SUFFIX = ".log"

#: Makes a batch of serialized records durable in the usage buffer (raises if it cannot).
Ship = Callable[[list[bytes]], Awaitable[object]]


class _Segment:
    """An open journal file and how many of its records are not yet in the buffer."""

    __slots__ = ("fd", "path", "size", "unshipped", "sealed")

    def __init__(self, fd: int, path: Path) -> None:
        self.fd, self.path = fd, path
        self.size = 0
        self.unshipped = 0
        self.sealed = False


class Journal:
    """This process's usage journal in ``directory`` (see the module docstring)."""

    def __init__(
        self,
        directory: Path | str,
        ship: Ship,
        *,
        segment_bytes: int = 4 * 1024 * 1024,
        segment_age_s: float = 2.0,
        replay_interval_s: float = 10.0,
    ) -> None:
        self.directory = Path(directory)
        self.ship = ship
        self.segment_bytes = segment_bytes
        self.segment_age_s = segment_age_s
        self.replay_interval_s = replay_interval_s
        self._active: _Segment | None = None
        self._opened_at = 0.0
        self._counter = 0
        self._sealed: list[_Segment] = []
        self._queued: list[tuple[_Segment, bytes]] = []  # written, to ship this turn
        self._later: list[Callable[[], bytes | None]] = []  # to write at this turn's end
        self._ship_scheduled = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._replayer: asyncio.Task[None] | None = None
        #: Records shipped and records whose shipping failed (kept for a replay).
        self.shipped = 0
        self.failed = 0

    async def open(self) -> None:
        """Replay what dead processes left, open a segment, start periodic replays."""
        self.directory.mkdir(parents=True, exist_ok=True)
        await self.replay()
        self._active = self._new_segment()
        self._replayer = asyncio.create_task(self._replay_loop(), name="usage-journal-replay")

    def _new_segment(self) -> _Segment:
        self._counter += 1
        name = f"jrn-{time.time_ns():020d}-{os.getpid()}-{self._counter:06d}"
        temporary = self.directory / f"{name}.new"
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)  # held until every record in it is shipped
        path = self.directory / f"{name}{_SUFFIX}"
        os.rename(temporary, path)
        self._opened_at = time.monotonic()
        return _Segment(fd, path)

    def record(self, payload: bytes) -> None:
        """Write one serialized record to the journal now, and ship it in the background.

        Returns once the bytes are in the kernel (no ``fsync``): the record survives
        this process being killed from here on.
        """
        segment = self._write(frame(payload), 1)
        self._queued.append((segment, payload))
        self._schedule_ship()

    def record_later(self, build: Callable[[], bytes | None]) -> None:
        """Write the record ``build()`` serializes (``None``: none) at the end of this
        turn of the event loop, with this turn's other such records in one ``write``,
        and ship it with this turn's batch. ``build`` must not raise.

        For a record that may turn out unneeded within the turn (a stream's
        provisional record, when its final one comes first), at less cost per record.
        """
        self._later.append(build)
        self._schedule_ship()

    def _write(self, data: bytes, records: int) -> _Segment:
        """Write ``records`` framed records (``data``) to the active segment; returns
        that segment (sealed if it is full or old: the next write opens another)."""
        segment = self._active
        if segment is None:
            raise RuntimeError("the usage journal is not open")
        os.write(segment.fd, data)
        segment.size += len(data)
        segment.unshipped += records
        if (
            segment.size >= self.segment_bytes
            or time.monotonic() - self._opened_at >= self.segment_age_s
        ):
            self._seal(segment)
            self._active = self._new_segment()
        return segment

    def _schedule_ship(self) -> None:
        if not self._ship_scheduled:
            self._ship_scheduled = True
            asyncio.get_running_loop().call_soon(self._ship_queued)

    def _write_later(self) -> None:
        builders, self._later = self._later, []
        payloads = []
        for build in builders:
            payload = build()
            if payload is not None:
                payloads.append(payload)
        if not payloads:
            return
        try:
            segment = self._write(b"".join(map(frame, payloads)), len(payloads))
        except (OSError, RuntimeError) as exc:  # not on the request path: say so
            log.error("%d usage records could not be journaled: %s", len(payloads), exc)
            return
        self._queued.extend([(segment, payload) for payload in payloads])

    def _ship_queued(self) -> None:
        """Write the records of :meth:`record_later`, then ship what this turn of the
        event loop wrote, as one batch."""
        self._ship_scheduled = False
        if self._later:
            self._write_later()
        batch, self._queued = self._queued, []
        if batch:
            task = asyncio.get_running_loop().create_task(self._ship(batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _ship(self, batch: list[tuple[_Segment, bytes]]) -> None:
        try:
            await self.ship([payload for _, payload in batch])
        except Exception as exc:  # kept in the journal; replayed by the next start
            self.failed += len(batch)
            log.error("%d usage records kept in the local journal only: %s", len(batch), exc)
            return
        self.shipped += len(batch)
        for segment, _ in batch:
            segment.unshipped -= 1
            if segment.sealed and segment.unshipped == 0:
                self._retire(segment)

    def _seal(self, segment: _Segment) -> None:
        segment.sealed = True
        if segment.unshipped == 0:
            self._retire(segment)
        else:
            self._sealed.append(segment)

    def _retire(self, segment: _Segment) -> None:
        """Every record of a sealed segment is shipped: delete it and let go of it."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(segment.path)
        os.close(segment.fd)
        segment.fd = -1
        with contextlib.suppress(ValueError):
            self._sealed.remove(segment)

    async def replay(self) -> int:
        """Ship every record of the segments no live process holds; returns how many."""

        async def ship_all(batch: list[bytes]) -> None:
            await self.ship(batch)

        total = 0
        mine = {s.path for s in (*self._sealed, self._active) if s is not None}
        for path in sorted(self.directory.glob(f"*{_SUFFIX}")):
            if path not in mine:
                total += await drain_segment(path, ship_all, 500)
        if total:
            log.warning("replayed %d usage records from a stopped process's journal", total)
        return total

    async def _replay_loop(self) -> None:
        while True:
            await asyncio.sleep(self.replay_interval_s)
            try:
                await self.replay()
            except Exception as exc:  # the buffer is down: try again next round
                log.warning("usage journal replay failed: %s", exc)

    @property
    def pending(self) -> int:
        """Records written here and not yet in the buffer."""
        return sum(s.unshipped for s in (*self._sealed, self._active) if s is not None)

    async def flush(self) -> None:
        """Wait until every record written so far has been shipped (or failed to)."""
        self._ship_queued()
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def close(self) -> None:
        """Wait for records in flight, then remove every fully shipped segment.

        A segment with records that could not be shipped stays on disk, unlocked,
        for the next start (or another replica on this host) to replay.
        """
        if self._replayer is not None:
            self._replayer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._replayer
            self._replayer = None
        await self.flush()
        if self._active is not None:
            self._seal(self._active)
            self._active = None
        for segment in list(self._sealed):
            os.close(segment.fd)  # unshipped records: left for a replay
            segment.fd = -1
        self._sealed.clear()
