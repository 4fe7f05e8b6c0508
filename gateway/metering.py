"""Metering: price each request and make its usage record durable, off SQL.

A usage record is built when a request ends, priced from the active price book
(:mod:`billing.cost`), and appended to the usage buffer (a Redis stream, else a
local fsynced spool); the ledger writer moves it into SQL later. With
``durable_before_response`` (the default) the append is awaited before the
client sees the response finish — the JSON body, or a stream's ``[DONE]`` —
so every request a client saw complete is in the ledger exactly once, even if
the process is killed right after. With ``journal`` the record is written to a
local journal file instead (:mod:`billing.journal`) and moved to the buffer right
after. Requests that end otherwise (errors,
cancelled streams) are submitted without waiting.

A stream also leaves a *provisional* record at its first upstream byte
(:meth:`Metering.provisional`), through the same path without waiting: status
``provisional``, the prompt tokens estimated, no completion tokens, priced as
``interrupted``. The stream's final record supersedes it in the ledger (one row
per request id); if the gateway dies mid-stream, no final record ever comes and
the ledger writer settles the provisional row as ``interrupted`` after
``metering.provisional_grace_s``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from billing.buffer import UsageBuffer
from billing.cost import CostQuote, compute_cost
from billing.gpu_share import GpuShareAccountant, internal_cost_micros
from billing.journal import Journal
from billing.leader import LeaderLock
from billing.ledger import Ledger
from billing.pricing import ActivePriceBook, PriceBook, load_price_book
from billing.pricing_store import PriceBookStore
from billing.spool import Spool
from billing.stream import RedisStream
from billing.usage import UsageRecord, UsageSource, UsageStatus
from billing.writer import LedgerWriter, WriterSettings
from gateway.outcome import RequestRecord
from gateway.usagefields import catalog_of, pool_of, request_fields
from tollway.errors import TollwayError
from tollway.resp import RespClient

log = logging.getLogger("tollway.metering")


class Metering:
    """Prices requests, buffers their usage records, and runs the ledger writer."""

    def __init__(
        self,
        *,
        engine: AsyncEngine,
        data_dir: Path,
        redis: RespClient | None,
        pricing_path: str | None,
        gpu_hour_usd: dict[str, Decimal | None],
        redis_prefix: str = "tollway:",
        durable_before_response: bool = True,
        run_writer: bool = True,
        claim_idle_ms: int = 30_000,
        writer_linger_s: float = 0.1,
        journal: bool = False,
        provisional_grace_s: float = 900.0,
    ) -> None:
        self.accountant = GpuShareAccountant()
        self.spool = Spool(data_dir / "spool")
        self.stream = RedisStream(redis, prefix=redis_prefix) if redis is not None else None
        self.buffer = UsageBuffer(self.spool, self.stream)
        self.journal = (
            Journal(data_dir / "journal", self.buffer.append_payloads) if journal else None
        )
        self.books = PriceBookStore(engine)
        self.active: ActivePriceBook | None = None
        self.pricing_path = pricing_path
        self.gpu_hour_usd = gpu_hour_usd
        self.durable_before_response = durable_before_response
        leader = LeaderLock(redis, f"{redis_prefix}{{usage}}:leader") if redis else None
        self.writer = (
            LedgerWriter(
                Ledger(engine),
                spool=self.spool,
                stream=self.stream,
                leader=leader,
                # Blocking stream reads must end before the shared client's socket
                # timeout (limits.redis_timeout_s, 250 ms by default).
                settings=WriterSettings(
                    claim_idle_ms=claim_idle_ms,
                    block_ms=100,
                    linger_s=writer_linger_s,
                    provisional_grace_s=provisional_grace_s,
                    settle_interval_s=min(10.0, provisional_grace_s),
                ),
            )
            if run_writer
            else None
        )
        #: What a catalog provider charges for a request's usage (set by the app).
        self.provider_cost: Callable[[str | None, dict[str, Any] | None], int | None] = (
            lambda route, usage: None
        )
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        #: Records in the Redis stream not yet in the ledger, and unwritten spool bytes.
        self.buffer_depth = 0
        self.spool_bytes = 0
        #: When (epoch seconds) the oldest record not yet in the ledger was buffered.
        self.oldest_buffered_at: float | None = None

    @property
    def book(self) -> PriceBook | None:
        """The price book in force, if any."""
        return self.active.book if self.active is not None else None

    async def start(self) -> None:
        """Open the buffer, load the price book, start the writer and book refresh."""
        await self.buffer.open()
        if self.journal is not None:
            await self.journal.open()
        if self.pricing_path is not None:
            text = Path(self.pricing_path).read_text(encoding="utf-8")
            await self.books.apply(load_price_book(self.pricing_path), source=text)
        stored = await self.books.get()
        if stored is not None:
            self.active = ActivePriceBook(stored)
        if self.writer is not None:
            self._tasks.append(asyncio.create_task(self.writer.run(self._stop), name="ledger"))
        elif self.stream is not None:  # the writer may not see this host's spool
            restream = self.buffer.run_restream(self._stop, self.spool.seal_after_s)
            self._tasks.append(asyncio.create_task(restream, name="spool-restream"))
        self._tasks.append(asyncio.create_task(self._refresh_books(), name="price-books"))
        self._tasks.append(asyncio.create_task(self._watch_buffer(), name="buffer-watch"))

    async def stop(self) -> None:
        """Flush buffered records and stop the background tasks."""
        if self.journal is not None:
            await self.journal.close()
        await self.buffer.drain_submitted()
        self._stop.set()  # every background loop finishes its round and returns
        # Cancellation only as a backstop: a cancel that lands inside a Redis call
        # can be swallowed by the client library, so loops end on the event.
        done, pending = await asyncio.wait(self._tasks, timeout=5)
        for task in pending:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(task, timeout=5)
        if self.writer is not None:
            with contextlib.suppress(TollwayError):
                await self.writer.run_once()
        elif self.stream is not None:
            await self.buffer.restream()  # a writer elsewhere may never see this spool
        await self.buffer.close()

    async def _pause(self, seconds: float) -> bool:
        """Sleep ``seconds`` or until stopped; True while running."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), timeout=seconds)
        return not self._stop.is_set()

    async def _refresh_books(self) -> None:
        while await self._pause(5):
            try:
                latest = await self.books.get()
            except TollwayError as exc:
                log.warning("cannot refresh the price book: %s", exc.message)
                continue
            if latest is not None and (self.book is None or latest.version != self.book.version):
                if self.active is None:
                    self.active = ActivePriceBook(latest)
                else:
                    self.active.replace(latest)
                log.info("price book version %d is now active", latest.version)

    @property
    def ledger_lag_s(self) -> float:
        """How far the ledger is behind: the age of the oldest buffered record (spool or
        stream, whoever writes the ledger), or the time since this process's ledger
        writer last finished a round, whichever is larger."""
        lag = 0.0
        if self.writer is not None:
            lag = time.monotonic() - self.writer.last_round_at
        if self.oldest_buffered_at is not None:
            lag = max(lag, time.time() - self.oldest_buffered_at)
        return max(0.0, lag)

    async def _watch_buffer(self) -> None:
        while not self._stop.is_set():
            try:
                self.buffer_depth = await self.stream.length() if self.stream else 0
            except TollwayError:
                pass  # Redis down: the last figure stands, records go to the spool
            self.spool_bytes = self.spool.size_bytes()
            self.oldest_buffered_at = await self.buffer.oldest_record_at()
            await self._pause(5)

    def quote(self, record: RequestRecord, gpu_seconds: float) -> CostQuote:
        """The cost of a request as recorded so far.

        The price book decides; a catalog request no rate matches is charged what its
        provider charges (the entry's price, or litellm's local cost map).
        """
        book = self.book
        quote = self._book_quote(record, gpu_seconds)
        if quote.rate_id is None and record.status == "ok":
            passed = self.provider_cost(record.route, record.usage)
            if passed is not None:
                return CostQuote(passed, catalog_of(record.route), quote.price_book_version)
        return quote if book is not None else CostQuote(quote.cost_micros, None, 0)

    def max_cost(self, record: RequestRecord, prompt: int, output: int) -> int:
        """What ``record`` would cost with ``prompt`` input and ``output`` output tokens
        (no cache hits): :meth:`quote` for a successful request, without copying it."""
        quote = self._price(record, "ok", (prompt, 0, output), 0.0)
        if quote.rate_id is not None:
            return quote.cost_micros
        passed = self.provider_cost(
            record.route, {"prompt_tokens": prompt, "completion_tokens": output}
        )
        return passed if passed is not None else 0

    def _book_quote(self, record: RequestRecord, gpu_seconds: float) -> CostQuote:
        return self._price(record, record.status, record.tokens(), gpu_seconds)

    def _price(
        self,
        record: RequestRecord,
        status: str,
        tokens: tuple[int, int, int],
        gpu_seconds: float,
    ) -> CostQuote:
        """The price book's quote for ``record`` with this status and (prompt, cached,
        completion) tokens; cost 0 and no rate without a book, tenant or model."""
        book = self.book
        if book is None or record.tenant_id is None or record.model is None:
            return CostQuote(0, None, book.version if book else 0)
        prompt, cached, completion = tokens
        return compute_cost(
            book,
            tenant_id=record.tenant_id,
            model=record.model,
            pool=pool_of(record.route),
            agent_type=record.agent_type,
            at=record.created_at,
            status=status,
            prompt_tokens=prompt,
            cached_tokens=cached,
            completion_tokens=completion,
            gpu_seconds=gpu_seconds,
        )

    def usage_record(
        self, record: RequestRecord, gpu_seconds: float, quote: CostQuote, source: UsageSource
    ) -> UsageRecord:
        """The ledger's record of a finished request (its cost is noted on ``record`` too)."""
        record.cost_micros = quote.cost_micros
        prompt, cached, completion = record.tokens()
        usage = record.usage or {}
        details = usage.get("completion_tokens_details")
        reasoning = details.get("reasoning_tokens") if isinstance(details, dict) else None
        pool = pool_of(record.route)
        rate = self.gpu_hour_usd.get(pool) if pool else None
        provider = self.provider_cost(record.route, record.usage)
        return UsageRecord(
            **request_fields(record, pool),
            prompt_tokens=prompt,
            cached_tokens=cached,
            completion_tokens=completion,
            reasoning_tokens=int(reasoning or usage.get("reasoning_tokens") or 0),
            tool_calls=record.tool_calls,
            ttft_ms=None if record.ttft_s is None else record.ttft_s * 1000,
            latency_ms=record.latency_s * 1000,
            status=UsageStatus(record.status),
            usage_source=source,
            gpu_seconds=gpu_seconds,
            internal_cost_micros=(
                provider
                if provider is not None
                else internal_cost_micros(gpu_seconds, rate)
                if rate
                else 0
            ),
            price_book_version=quote.price_book_version,
            rate_id=quote.rate_id,
            cost_micros=quote.cost_micros,
        )

    async def commit(self, usage: UsageRecord) -> None:
        """Make a record durable now (the response waits for this)."""
        if self.journal is not None:
            self.journal.record(usage.to_bytes())
        elif self.durable_before_response:
            await self.buffer.append(usage)
        else:
            self.buffer.submit(usage)

    def submit(self, usage: UsageRecord) -> None:
        """Make a record durable in the background (drained at shutdown)."""
        self.buffer.submit(usage)

    def provisional(self, record: RequestRecord, prompt_tokens: Callable[[], int]) -> None:
        """Journal a stream's provisional record; called at its first byte.

        The record is built and written at the end of the current turn of the event
        loop, so the first byte leaves first; it carries what is known then (the
        prompt tokens ``prompt_tokens()`` estimates, no completion tokens, priced as
        ``interrupted``) and goes through the same path as final records, without
        waiting. With the journal, the provisional records of one turn share one
        ``write`` and leave with that turn's batch (:meth:`Journal.record_later`);
        none is written for a stream whose final record came first. The stream's
        final record supersedes it in the ledger, whatever that says (see the module
        docstring).
        """
        if self.journal is not None:
            self.journal.record_later(lambda: self._provisional_bytes(record, prompt_tokens))
        else:
            asyncio.get_running_loop().call_soon(self._submit_provisional, record, prompt_tokens)

    def _provisional_bytes(
        self, record: RequestRecord, estimate: Callable[[], int]
    ) -> bytes | None:
        usage = self._provisional(record, estimate)
        return usage.to_bytes() if usage is not None else None

    def _submit_provisional(self, record: RequestRecord, estimate: Callable[[], int]) -> None:
        usage = self._provisional(record, estimate)
        if usage is not None:
            self.buffer.submit(usage)

    def _provisional(
        self, record: RequestRecord, estimate: Callable[[], int]
    ) -> UsageRecord | None:
        """The provisional record of ``record`` (None once its final record is on its
        way, or if it cannot be built: metering must never break the stream)."""
        if record.metered:
            return None
        try:
            prompt_tokens = estimate()
            book = self.book
            if book is not None and UsageStatus.INTERRUPTED in book.document.charged_statuses:
                quote = self._price(record, UsageStatus.INTERRUPTED, (prompt_tokens, 0, 0), 0.0)
            else:  # not charged (the default): no rate to look up
                quote = CostQuote(0, None, book.version if book is not None else 0)
            # Built directly (not usage_record() then replace()): this runs once per
            # stream on the request path, and is half the cost that way.
            return UsageRecord(
                **request_fields(record, pool_of(record.route)),
                prompt_tokens=prompt_tokens,
                latency_ms=record.latency_s * 1000,
                status=UsageStatus.PROVISIONAL,
                usage_source=UsageSource.ESTIMATED,
                price_book_version=quote.price_book_version,
                rate_id=quote.rate_id,
                cost_micros=quote.cost_micros,
            )
        except Exception:  # noqa: BLE001 - metering must never break the stream
            log.exception("building the provisional record of %s failed", record.request_id)
            return None
