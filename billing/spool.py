"""The local spool: an append-only, fsynced file buffer for usage records.

Used when there is no Redis or while Redis is down. Records are framed
(``length, crc32, payload``) and appended to the process's active *segment*;
concurrent appends share one ``fsync`` (group commit), and :meth:`Spool.append`
returns only once its record is on disk.

Segments are claimed with ``flock``: a process holds an exclusive lock on its
active segment, so a drainer (any process) takes only *sealed* segments or those of
dead processes. A segment is created by the first record appended after the previous
one was sealed (its name starts with that moment, so the oldest segment tells how old
the oldest record not yet drained is), and sealed once it holds ``segment_bytes``,
once its first record is ``seal_after_s`` old, and on :meth:`Spool.rotate`: a record
is claimable by a drainer in another process within ``seal_after_s``, whether or not
this process writes anything else. Draining reads a segment from its checkpoint, hands batches to a
handler (the ledger writer), advances the checkpoint after each batch, and deletes
the segment when it is done, so nothing is ever re-read forever. A torn last frame
(a process killed mid-write) is ignored: its append never returned.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import struct
import time
import zlib
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

_HEADER = struct.Struct(">II")
_SUFFIX = ".log"
_CHECKPOINT = ".ckpt"


def frame(payload: bytes) -> bytes:
    """One record as written to a segment."""
    return _HEADER.pack(len(payload), zlib.crc32(payload)) + payload


def read_frames(data: bytes, offset: int = 0) -> Iterator[tuple[int, bytes]]:
    """``(end offset, payload)`` for each whole, intact frame from ``offset``.

    Stops at the first truncated or corrupt frame (the torn tail of a crash).
    """
    size = len(data)
    while offset + _HEADER.size <= size:
        length, crc = _HEADER.unpack_from(data, offset)
        start = offset + _HEADER.size
        end = start + length
        if end > size:
            return
        payload = data[start:end]
        if zlib.crc32(payload) != crc:
            return
        yield end, payload
        offset = end


class Spool:
    """An append-only spool of records in ``directory``, safe across processes."""

    def __init__(
        self,
        directory: Path | str,
        *,
        segment_bytes: int = 16 * 1024 * 1024,
        seal_after_s: float = 1.0,
    ) -> None:
        self.directory = Path(directory)
        self.segment_bytes = segment_bytes
        #: A segment is sealed (claimable by any drainer) once its first record is this old.
        self.seal_after_s = seal_after_s
        self._fd: int | None = None
        self._path: Path | None = None
        self._size = 0
        self._opened_at = 0.0
        self._counter = 0
        self._waiters: list[asyncio.Future[None]] = []
        self._rotate_waiters: list[asyncio.Future[None]] = []
        self._wake = asyncio.Event()
        self._flusher: asyncio.Task[None] | None = None
        self._closed = False

    # -- writing -------------------------------------------------------------------------

    def _open_segment(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self._counter += 1
        name = f"seg-{time.time_ns():020d}-{os.getpid()}-{self._counter:06d}"
        temporary = self.directory / f"{name}.new"
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        # Renamed only once locked, so no drainer ever takes a segment still in use.
        final = self.directory / f"{name}{_SUFFIX}"
        os.rename(temporary, final)
        _fsync_directory(self.directory)
        self._fd, self._path, self._size = fd, final, 0
        self._opened_at = time.monotonic()

    async def open(self) -> None:
        """Create the directory; start the group-commit task (the first append creates
        the active segment)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        if self._flusher is None:
            self._flusher = asyncio.create_task(self._flush_loop(), name="usage-spool-fsync")

    def submit(self, payload: bytes) -> asyncio.Future[None]:
        """Write a record now; the future completes once it is fsynced."""
        if self._closed or self._flusher is None:
            raise RuntimeError("the spool is not open")
        if self._fd is None:
            self._open_segment()
        assert self._fd is not None
        data = frame(payload)
        written = os.write(self._fd, data)
        if written != len(data):  # pragma: no cover - regular files write fully or raise
            raise OSError("short write to the usage spool")
        self._size += written
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        self._wake.set()
        return waiter

    async def append(self, payload: bytes) -> None:
        """Append a record; returns once it is durable on disk."""
        await self.submit(payload)

    async def rotate(self) -> None:
        """Seal the active segment (when it has data), so a drainer can take it."""
        if self._fd is None or self._size == 0:
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._rotate_waiters.append(waiter)
        self._wake.set()
        await waiter

    def _seal_due_in(self) -> float | None:
        """Seconds until the active segment is due for sealing (None: no segment)."""
        if self._fd is None or not self._size or self.seal_after_s <= 0:
            return None
        return self._opened_at + self.seal_after_s - time.monotonic()

    async def _flush_loop(self) -> None:
        while True:
            due_in = self._seal_due_in()
            if due_in is None:
                await self._wake.wait()
            elif due_in > 0:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(due_in):
                        await self._wake.wait()
            self._wake.clear()
            waiters, self._waiters = self._waiters, []
            fd = self._fd
            if waiters and fd is not None:
                await _settle(waiters, asyncio.to_thread(os.fsync, fd))
            rotate_waiters, self._rotate_waiters = self._rotate_waiters, []
            due_in = self._seal_due_in()
            if (
                (rotate_waiters and self._size)
                or self._size >= self.segment_bytes
                or (due_in is not None and due_in <= 0)
            ):
                await self._seal_and_switch()
            for waiter in rotate_waiters:
                if not waiter.done():
                    waiter.set_result(None)
            if self._closed:
                return

    async def _seal_and_switch(self) -> None:
        old_fd = self._fd
        late, self._waiters = self._waiters, []
        # The next append creates a new segment (named by its moment).
        self._fd, self._path, self._size = None, None, 0
        if old_fd is not None:
            await _settle(late, asyncio.to_thread(os.fsync, old_fd))
            os.close(old_fd)  # releases the lock: the segment is sealed

    async def close(self) -> None:
        """Flush, seal the active segment and stop the group-commit task."""
        if self._closed:
            return
        self._closed = True
        if self._flusher is not None:
            self._wake.set()
            await self._flusher
            self._flusher = None
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.fsync(fd)
            os.close(fd)

    # -- draining ------------------------------------------------------------------------

    def segments(self) -> list[Path]:
        """Segment files present, oldest first (any process's)."""
        if not self.directory.exists():
            return []
        return sorted(self.directory.glob(f"*{_SUFFIX}"))

    def size_bytes(self) -> int:
        """Bytes in every segment present (a segment drained meanwhile counts 0)."""
        total = 0
        for path in self.segments():
            with contextlib.suppress(FileNotFoundError):
                total += path.stat().st_size
        return total

    def oldest_record_at(self) -> float | None:
        """When (epoch seconds) the oldest record still in the spool was appended, any
        process's; None when the spool is empty. Read from the oldest segment's name."""
        for path in self.segments():
            stamp = _segment_time(path)
            if stamp is not None:
                return stamp
        return None

    async def drain(
        self,
        handler: Callable[[list[bytes]], Awaitable[None]],
        *,
        batch_size: int = 1000,
        include_active: bool = True,
    ) -> int:
        """Hand every record of every claimable segment to ``handler`` in batches.

        ``handler`` must make the batch durable elsewhere (idempotently) before it
        returns; a raised exception stops the drain and keeps the segment, resumed
        later from its checkpoint. Returns the number of records handed over.
        """
        if include_active:
            await self.rotate()
        total = 0
        for path in self.segments():
            if path == self._path:
                continue
            total += await drain_segment(path, handler, batch_size)
        return total


async def _settle(waiters: list[asyncio.Future[None]], work: Awaitable[None]) -> None:
    try:
        await work
    except OSError as exc:
        for waiter in waiters:
            if not waiter.done():
                waiter.set_exception(exc)
        return
    for waiter in waiters:
        if not waiter.done():
            waiter.set_result(None)


def _segment_time(path: Path) -> float | None:
    """The epoch seconds a segment's name starts with (``seg-<ns>-<pid>-<n>.log``)."""
    parts = path.name.split("-")
    if len(parts) < 2 or not parts[1].isdigit():
        return None
    return int(parts[1]) / 1e9


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _read_checkpoint(path: Path) -> int:
    try:
        return int(path.read_text().strip() or 0)
    except (OSError, ValueError):
        return 0


def _write_checkpoint(path: Path, offset: int) -> None:
    temporary = path.with_suffix(".ckpt-new")
    with open(temporary, "w") as file:
        file.write(str(offset))
        file.flush()
        os.fsync(file.fileno())
    os.replace(temporary, path)


async def drain_segment(
    path: Path, handler: Callable[[list[bytes]], Awaitable[None]], batch_size: int
) -> int:
    """Hand one segment's records to ``handler`` in batches from its checkpoint, then
    delete it; 0 when a live process holds it (or another drainer has it)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return 0  # another drainer finished it
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return 0  # still written by a live process, or being drained
        if not path.exists():
            return 0  # drained and deleted while we waited for the lock
        checkpoint = path.with_name(path.name + _CHECKPOINT)
        offset = _read_checkpoint(checkpoint)
        with open(fd, "rb", closefd=False) as file:
            data = file.read()
        batch: list[bytes] = []
        handed = 0
        end = offset
        for end, payload in read_frames(data, offset):
            batch.append(payload)
            if len(batch) >= batch_size:
                await handler(batch)
                handed += len(batch)
                batch = []
                _write_checkpoint(checkpoint, end)
        if batch:
            await handler(batch)
            handed += len(batch)
        os.unlink(path)
        checkpoint.unlink(missing_ok=True)
        return handed
    finally:
        os.close(fd)
