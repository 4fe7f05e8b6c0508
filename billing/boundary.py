"""The one place billing translates foreign exceptions into Tollway's errors.

SQLAlchemy and driver errors (the ledger database), redis errors (the usage stream,
the leader lock) and connection errors become
:class:`~tollway.errors.ServiceUnavailable`; Stripe errors become
:class:`~tollway.errors.UpstreamError` (or :class:`~tollway.errors.RateLimited` for
a 429), always ``raise ... from exc``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import sqlalchemy.exc
import stripe

from tollway.errors import RateLimited, ServiceUnavailable, TollwayError, UpstreamError
from tollway.resp import RespError


@contextmanager
def foreign_errors(what: str) -> Iterator[None]:
    """Translate foreign exceptions raised while doing ``what`` (a short phrase)."""
    try:
        yield
    except TollwayError:
        raise
    except sqlalchemy.exc.SQLAlchemyError as exc:
        raise ServiceUnavailable(f"{what}: database error: {exc.__class__.__name__}") from exc
    except RespError as exc:
        raise ServiceUnavailable(f"{what}: redis error: {exc}") from exc
    except stripe.RateLimitError as exc:
        raise RateLimited(f"{what}: Stripe rate limit: {exc.user_message or exc}") from exc
    except stripe.StripeError as exc:
        raise UpstreamError(f"{what}: Stripe error: {exc.user_message or exc}") from exc
    except (OSError, TimeoutError) as exc:
        raise ServiceUnavailable(f"{what}: {exc}") from exc
