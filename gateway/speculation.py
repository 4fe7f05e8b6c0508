"""When a request may be dispatched while its admission is still on its way to Redis.

Admission against Redis costs one round trip. For a key that is far from all of
its limits, the answer is almost certainly "yes", so the pipeline may send the
request to its self-hosted pool *and* the admission script to Redis at once, and
wait for both. Redis stays the only authority: nothing reaches the client until
the admission has answered, and a refused request is answered with the same 429
(or 503) as without speculation; its upstream response is discarded. What a
wrong guess costs is the upstream work of one refused request, never a
response, a token of a limit, or money.

:class:`SpeculationGate` bounds that cost. It keeps, per tenant and key, the last
answer Redis gave this replica:

- speculation needs an answer younger than ``max_age_s`` that admitted a request;
- after it, at least ``headroom`` of every rate limit (requests and tokens per
  minute, the tightest of the tenant's and the key's) must be left, counting the
  speculations started since, each charged locally as Redis will charge it;
- any refusal (rate, concurrency, budget, or Redis unreachable) turns speculation
  off for that key for ``cooldown_s``, so a key at a concurrency limit or out of
  budget is checked before dispatch until its cool-down ends.

Concurrency and budget headroom are not in Redis's answer; the cool-down is what
bounds their wasted dispatches: per replica and key, the speculations in flight
when the first refusal arrives.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from gateway.limits import RateStatus, Ticket

#: Hints kept at most; the table is cleared when it grows past this (a backstop:
#: one hint per active key).
MAX_HINTS = 100_000


@dataclass(slots=True)
class _Hint:
    """This replica's last answer for one key, and what it has speculated since."""

    seen_at: float = -math.inf
    refused_at: float = -math.inf
    #: (limit, remaining) of the tightest requests-per-minute limit, None without one.
    requests: tuple[int, int] | None = None
    #: (limit, remaining) of the tightest tokens-per-minute limit, None without one.
    tokens: tuple[int, int] | None = None


def _pair(status: RateStatus | None) -> tuple[int, int] | None:
    return None if status is None else (status.limit, status.remaining)


class SpeculationGate:
    """Decides, per tenant and key, whether admission may overlap dispatch.

    ``speculated`` counts the requests dispatched before their admission answered,
    ``lost`` those of them that Redis then refused (their upstream work was wasted).
    """

    def __init__(
        self,
        *,
        headroom: float = 0.25,
        max_age_s: float = 1.0,
        cooldown_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 0.0 <= headroom <= 1.0:
            raise ValueError(f"headroom must be between 0 and 1, not {headroom}")
        self.headroom = headroom
        self.max_age_s = max_age_s
        self.cooldown_s = cooldown_s
        self._clock = clock
        self._hints: dict[tuple[str, str], _Hint] = {}
        self.speculated = 0
        self.lost = 0

    def try_speculate(self, key: tuple[str, str], tokens: int) -> bool:
        """True when a request of ``tokens`` (estimated) may be dispatched before its
        admission answers; it is then charged against the key's hint."""
        hint = self._hints.get(key)
        if hint is None:
            return False
        now = self._clock()
        if now - hint.seen_at > self.max_age_s or now - hint.refused_at < self.cooldown_s:
            return False
        requests, token_state = hint.requests, hint.tokens
        if requests is not None and requests[1] - 1 < self.headroom * requests[0]:
            return False
        if token_state is not None and token_state[1] - tokens < self.headroom * token_state[0]:
            return False
        if requests is not None:
            hint.requests = (requests[0], requests[1] - 1)
        if token_state is not None:
            hint.tokens = (token_state[0], token_state[1] - tokens)
        self.speculated += 1
        return True

    def admitted(self, key: tuple[str, str], ticket: Ticket | None) -> None:
        """Redis admitted a request of ``key``: its answer becomes the key's hint.

        Tickets from another engine (the in-process fallback while Redis is down)
        say nothing of the shared state and leave no hint."""
        if ticket is None or ticket.engine != "redis":
            self._hints.pop(key, None)
            return
        hint = self._hints.get(key)
        if hint is None:
            if len(self._hints) >= MAX_HINTS:
                self._hints.clear()
            hint = self._hints[key] = _Hint()
        hint.seen_at = self._clock()
        hint.requests = _pair(ticket.requests)
        hint.tokens = _pair(ticket.tokens)

    def refused(self, key: tuple[str, str], *, speculative: bool) -> None:
        """A request of ``key`` was refused (or Redis could not answer): no
        speculation for ``cooldown_s``. ``speculative``: it had been dispatched."""
        if speculative:
            self.lost += 1
        hint = self._hints.get(key)
        if hint is None:
            if len(self._hints) >= MAX_HINTS:
                self._hints.clear()
            hint = self._hints[key] = _Hint()
        hint.refused_at = self._clock()
