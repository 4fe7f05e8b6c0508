"""Running a request at most once per idempotency key: the API the pipeline calls.

::

    outcome = await idempotency.begin(tenant, key, fingerprint, wait_s=wait_preference(headers))
    if isinstance(outcome, Replay):
        return replay_response(outcome.response)        # not forwarded, not billed
    lease = outcome.lease
    ...                                                  # admit, forward, meter
    await lease.complete(StoredResponse(...))            # a 2xx that the client got
    # or, on any error:  await lease.abandon()           (or lease.abandon_soon())

``begin`` claims the key atomically, so of N parallel duplicates exactly one
gets :class:`Proceed`; the others wait (polling with backoff, bounded by
``wait_timeout_s`` or the client's ``Prefer: wait``) and then get
:class:`Replay`, or, if the first one failed and released the key, one of them
proceeds in its place. Errors raised:

* :class:`~tollway.errors.Unprocessable` (422, ``idempotency_key_reused``): the
  key was used with a different request (path, body or agent type);
* :class:`~tollway.errors.Conflict` (409, ``idempotency_in_progress``, with
  Retry-After): the first request is still running and the caller would not
  wait, or waited ``wait_timeout_s`` in vain;
* :class:`~tollway.errors.Conflict` (409, ``idempotency_response_not_stored``): the
  first request finished but its response was over ``max_record_bytes``;
* :class:`~tollway.errors.ServiceUnavailable` (503): the store is unreachable
  and ``on_store_outage`` is ``fail_closed``.

What is final: only a response that reached the client in full (a 2xx body,
or a stream that ended with ``[DONE]``) is stored. Every error, the gateway's
own 4xx included (rate limits, budgets), releases the key: errors are never
billed, transient ones deserve a fresh run, and a deterministic one costs
nothing to produce again. A stream cut short (client gone, upstream broken)
also releases the key, so the agent can resume with the same key.

While the request runs its claim is renewed every ``lease_s / 3``; if the
replica dies, the claim expires within ``lease_s`` and a repeat proceeds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import secrets
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from gateway.idempotency.config import IdempotencyConfig
from gateway.idempotency.keys import storage_key
from gateway.idempotency.memory import MemoryIdempotencyStore
from gateway.idempotency.record import CorruptRecord, StoredResponse
from gateway.idempotency.redis_store import RedisIdempotencyStore
from gateway.idempotency.store import Claimed, Done, IdempotencyStore
from tollway.backoff import Backoff
from tollway.errors import Conflict, ServiceUnavailable, TollwayError, Unprocessable
from tollway.resp import RespClient

log = logging.getLogger("tollway.idempotency")

#: Called with an event name: ``proceed``, ``replay``, ``wait``, ``conflict``,
#: ``mismatch``, ``outage``, ``lease_lost``, ``oversize`` (for a metrics counter).
EventHook = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class Replay:
    """The key's request already finished: send ``response`` again."""

    response: StoredResponse


@dataclass(frozen=True, slots=True)
class Proceed:
    """Run the request; report how it ended through ``lease``."""

    lease: Lease


Outcome = Proceed | Replay


class Lease:
    """The right, and the duty, to run the first request with a key.

    End it with exactly one of :meth:`complete`, :meth:`abandon` or
    :meth:`abandon_soon`; later calls do nothing. An untracked lease (feature
    off, or the store down under ``fail_open``) accepts the calls and stores
    nothing.
    """

    def __init__(
        self,
        owner: IdempotencyCoordinator | None,
        key: str = "",
        fingerprint: str = "",
        token: str = "",
    ) -> None:
        self._owner = owner
        self.key = key
        self.fingerprint = fingerprint
        self._token = token
        self._renewer: asyncio.Task[None] | None = None
        self._open = owner is not None

    @property
    def tracked(self) -> bool:
        """Whether a claim in the store stands behind this lease."""
        return self._owner is not None

    @property
    def active(self) -> bool:
        """True until the lease is completed or abandoned."""
        return self._open

    @property
    def max_record_bytes(self) -> int:
        """Largest response that will be kept for replay."""
        return self._owner.config.max_record_bytes if self._owner else 0

    def _finish(self) -> IdempotencyCoordinator | None:
        if not self._open:
            return None
        self._open = False
        if self._renewer is not None:
            self._renewer.cancel()
            self._renewer = None
        return self._owner

    async def complete(self, response: StoredResponse) -> bool:
        """Store ``response`` for repeats; True when stored (never raises for the store).

        A response over ``max_record_bytes`` (or captured as not kept) is
        handled per ``on_oversize``: a tombstone, or the key is released.
        """
        owner = self._finish()
        if owner is None:
            return False
        cfg = owner.config
        if not response.kept or response.payload_size > cfg.max_record_bytes:
            owner.event("oversize")
            if cfg.on_oversize == "release":
                await owner.release(self)
                return False
            response = response.tombstone()
        try:
            stored = await owner.store.complete(
                self.key, self.fingerprint, self._token, response.encode(), cfg.ttl_s
            )
        except ServiceUnavailable as exc:
            log.warning("could not store the response of an idempotent request: %s", exc)
            owner.event("outage")
            return False
        if not stored:
            log.warning("an idempotency lease was lost before its request finished")
            owner.event("lease_lost")
        return stored

    async def abandon(self) -> None:
        """Release the key now, so a repeat runs the request again."""
        owner = self._finish()
        if owner is not None:
            await owner.release(self)

    def abandon_soon(self) -> None:
        """:meth:`abandon` in a task of its own: safe where awaiting is not (a
        cancelled task, a generator's ``finally``)."""
        owner = self._finish()
        if owner is not None:
            owner.spawn(owner.release(self), name="idempotency-release")


class IdempotencyCoordinator:
    """Claims, waits, replays and records, over an :class:`IdempotencyStore`."""

    def __init__(
        self,
        store: IdempotencyStore,
        config: IdempotencyConfig | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        on_event: EventHook | None = None,
    ) -> None:
        self.store = store
        self.config = config or IdempotencyConfig()
        self._clock = clock
        self._on_event = on_event
        self._tasks: set[asyncio.Task[None]] = set()

    def event(self, name: str) -> None:
        """Report one event to the hook."""
        if self._on_event is not None:
            self._on_event(name)

    async def begin(
        self, tenant: str, key: str, fingerprint: str, *, wait_s: float | None = None
    ) -> Outcome:
        """Claim ``key`` of ``tenant`` for a request with ``fingerprint`` (see module doc).

        ``wait_s`` is the client's ``Prefer: wait`` (None: the configured wait;
        0: do not wait); it never extends ``wait_timeout_s``.
        """
        cfg = self.config
        if not cfg.enabled:
            return Proceed(Lease(None))
        skey = storage_key(cfg.prefix, tenant, key)
        token = secrets.token_hex(16)
        patience = (
            cfg.wait_timeout_s if wait_s is None else min(max(0.0, wait_s), cfg.wait_timeout_s)
        )
        deadline = self._clock() + patience
        backoff = Backoff(cfg.poll_initial_s, cfg.poll_max_s)  # no jitter: a poll
        polls = 0
        waited = False
        while True:
            try:
                found = await self.store.claim(skey, fingerprint, token, cfg.lease_s)
            except ServiceUnavailable:
                self.event("outage")
                if cfg.on_store_outage == "fail_closed":
                    raise
                log.warning("idempotency store unavailable; running a keyed request unguarded")
                return Proceed(Lease(None))
            if isinstance(found, Claimed):
                self.event("proceed")
                return Proceed(self._lease(skey, fingerprint, token))
            if found.fingerprint != fingerprint:
                self.event("mismatch")
                raise Unprocessable(
                    "This Idempotency-Key was already used with a different request.",
                    code="idempotency_key_reused",
                )
            if isinstance(found, Done):
                return self._replay(found)
            remaining = deadline - self._clock()
            if remaining <= 0:
                self.event("conflict")
                raise self._in_progress(waited)
            if not waited:
                waited = True
                self.event("wait")
            await self.store.wait_change(skey, min(backoff.delay(polls), remaining))
            polls += 1

    def _replay(self, found: Done) -> Replay:
        try:
            response = StoredResponse.decode(found.record)
        except CorruptRecord as exc:
            raise TollwayError(
                "The stored response of this Idempotency-Key is unreadable."
            ) from exc
        if not response.kept:
            self.event("conflict")
            raise Conflict(
                "The request with this Idempotency-Key finished, but its response was too "
                "large to keep for replay; send a new key to run it again.",
                code="idempotency_response_not_stored",
            )
        self.event("replay")
        return Replay(response)

    def _in_progress(self, waited: bool) -> Conflict:
        retry_after = str(max(1, math.ceil(self.config.conflict_retry_after_s)))
        detail = "did not finish in time" if waited else "is still in progress"
        return Conflict(
            f"A request with this Idempotency-Key {detail}; retry later.",
            code="idempotency_in_progress",
            headers={"retry-after": retry_after},
        )

    def _lease(self, skey: str, fingerprint: str, token: str) -> Lease:
        lease = Lease(self, skey, fingerprint, token)
        lease._renewer = self.spawn(self._renew(lease), name="idempotency-renew")
        return lease

    async def _renew(self, lease: Lease) -> None:
        cfg = self.config
        interval = cfg.lease_s / 3
        stop_at = self._clock() + cfg.max_request_duration_s - cfg.lease_s
        while self._clock() < stop_at:
            await asyncio.sleep(interval)
            try:
                kept = await self.store.renew(
                    lease.key, lease.fingerprint, lease._token, cfg.lease_s
                )
            except ServiceUnavailable as exc:
                log.warning("could not renew an idempotency lease: %s", exc)
                continue
            if not kept:
                log.warning("an idempotency lease expired while its request ran")
                self.event("lease_lost")
                return

    async def release(self, lease: Lease) -> None:
        """Delete ``lease``'s claim; a failure is logged (the claim then expires)."""
        try:
            await self.store.release(lease.key, lease.fingerprint, lease._token)
        except ServiceUnavailable as exc:
            log.warning("could not release an idempotency key (it will expire): %s", exc)
            self.event("outage")

    def spawn(self, work: Coroutine[Any, Any, None], *, name: str) -> asyncio.Task[None]:
        """Run ``work`` in a task this coordinator keeps until it ends."""
        task = asyncio.get_running_loop().create_task(work, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def aclose(self) -> None:
        """Stop renewals and wait for pending releases (the app's shutdown)."""
        tasks = list(self._tasks)
        for task in tasks:
            if task.get_name() == "idempotency-renew":
                task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task


def build_idempotency(
    config: IdempotencyConfig,
    redis: RespClient | None = None,
    *,
    on_event: EventHook | None = None,
) -> IdempotencyCoordinator:
    """The coordinator over Redis when a client is given, else over process memory."""
    store: IdempotencyStore
    if redis is not None:
        store = RedisIdempotencyStore(redis, timeout_s=config.store_timeout_s)
    else:
        store = MemoryIdempotencyStore()
    return IdempotencyCoordinator(store, config, on_event=on_event)
