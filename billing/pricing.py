"""The price book: versioned, dated rates matched most specific first.

A price book document (``pricing.yaml``) holds dated books, each a list of rates::

    discounts:                 # tenant id -> fraction off every charge
      acme: "0.10"
    books:
      - name: standard
        effective_from: 2025-01-01T00:00:00Z
        effective_to: 2026-01-01T00:00:00Z       # exclusive; omit for open-ended
        rates:
          - id: default
            input_per_million: "0.50"
            output_per_million: "1.50"
          - id: small
            model: agent-small
            input_per_million: "0.20"
            cached_input_per_million: "0.05"
            output_per_million: "0.60"
            per_request: "0.0001"
            per_gpu_second: "0.0004"
            minimum: "0.00001"
      - name: acme-contract                      # a tenant-specific book
        tenant: acme
        effective_from: 2025-03-01T00:00:00Z
        rates: [...]

A record is priced by the book in force at its ``created_at``: the tenant's own
book first (when it has a matching rate), else the general one. Within a book the
most specific rate wins: model + pool + agent type > model + pool > model + agent
type > model > pool + agent type > pool > agent type > default (a rate that names
nothing). Prices are decimal strings. A document gets its ``version`` when it is
stored (:mod:`billing.pricing_store`); a bad document is refused with
:class:`~tollway.errors.ConfigError` carrying the YAML path and the reason.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from tollway.errors import ConfigError

DEFAULT_CHARGED_STATUSES = ("ok", "client_cancelled")


def _decimal_string(value: Any) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ValueError('must be a decimal string such as "0.15" (quote it in YAML)')
    try:
        amount = Decimal(str(value).strip())
    except InvalidOperation:
        raise ValueError(f"not a decimal number: {value!r}") from None
    if not amount.is_finite() or amount < 0:
        raise ValueError(f"must be a finite, non-negative amount, not {value!r}")
    return amount


def _moment(value: Any) -> dt.datetime:
    if isinstance(value, dt.datetime):
        moment = value
    elif isinstance(value, dt.date):
        moment = dt.datetime(value.year, value.month, value.day, tzinfo=dt.UTC)
    elif isinstance(value, str):
        try:
            moment = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(f"not an ISO 8601 date-time: {value!r}") from None
    else:
        raise ValueError("must be an ISO 8601 date-time such as 2025-01-01T00:00:00Z")
    if moment.tzinfo is None:
        raise ValueError("must carry a time zone (for example a trailing Z)")
    return moment.astimezone(dt.UTC)


Price = Annotated[Decimal, BeforeValidator(_decimal_string)]
Moment = Annotated[dt.datetime, BeforeValidator(_moment)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Rate(_Strict):
    """One rate: what matches it and what it charges (USD, decimal)."""

    id: str = Field(min_length=1)
    model: str | None = None
    pool: str | None = None
    agent_type: str | None = None
    input_per_million: Price = Decimal(0)
    cached_input_per_million: Price | None = None
    output_per_million: Price = Decimal(0)
    per_request: Price = Decimal(0)
    per_gpu_second: Price = Decimal(0)
    minimum: Price = Decimal(0)

    @property
    def key(self) -> tuple[str | None, str | None, str | None]:
        """What the rate matches: ``(model, pool, agent_type)``, None for any."""
        return (self.model, self.pool, self.agent_type)


class Book(_Strict):
    """Rates in force from ``effective_from`` (inclusive) to ``effective_to`` (exclusive)."""

    name: str = Field(min_length=1)
    tenant: str | None = None
    effective_from: Moment
    effective_to: Moment | None = None
    rates: tuple[Rate, ...] = Field(min_length=1)

    def in_force(self, at: dt.datetime) -> bool:
        """Whether the book applies to a record created at ``at``."""
        return self.effective_from <= at and (self.effective_to is None or at < self.effective_to)


class PriceBookDocument(_Strict):
    """A whole ``pricing.yaml``: books, tenant discounts and the statuses charged."""

    books: tuple[Book, ...] = Field(min_length=1)
    discounts: dict[str, Price] = Field(default_factory=dict)
    charged_statuses: tuple[str, ...] = DEFAULT_CHARGED_STATUSES


# Specificity order of the (model, pool, agent_type) fields a rate may name.
_LOOKUP_ORDER: tuple[tuple[bool, bool, bool], ...] = tuple(
    sorted(
        ((m, p, a) for m in (True, False) for p in (True, False) for a in (True, False)),
        key=lambda named: named[0] * 4 + named[1] * 2 + named[2],
        reverse=True,
    )
)


@dataclass(frozen=True, slots=True)
class RateMatch:
    """The rate a record matched, and the book it came from."""

    book: Book
    rate: Rate

    @property
    def rate_id(self) -> str:
        """Stable id of the rate within the document: ``BOOK/RATE``."""
        return f"{self.book.name}/{self.rate.id}"


class PriceBook:
    """A validated price book document, with its stored version, ready to match rates."""

    def __init__(self, document: PriceBookDocument, version: int = 0) -> None:
        self.document = document
        self.version = version
        self._index: list[tuple[Book, dict[tuple[str | None, str | None, str | None], Rate]]] = [
            (book, {rate.key: rate for rate in book.rates}) for book in document.books
        ]

    def with_version(self, version: int) -> PriceBook:
        """The same document under a stored version number."""
        return PriceBook(self.document, version)

    def discount(self, tenant_id: str) -> Decimal:
        """The tenant's discount as a fraction (0 when none)."""
        return self.document.discounts.get(tenant_id, Decimal(0))

    def match(
        self,
        *,
        tenant_id: str,
        model: str,
        pool: str | None,
        agent_type: str | None,
        at: dt.datetime,
    ) -> RateMatch | None:
        """The most specific rate for a request, tenant book first; None when none applies."""
        general: RateMatch | None = None
        for book, rates in self._index:
            if not book.in_force(at) or book.tenant not in (None, tenant_id):
                continue
            rate = _lookup(rates, model, pool, agent_type)
            if rate is None:
                continue
            if book.tenant is not None:
                return RateMatch(book, rate)
            general = RateMatch(book, rate)
        return general


def _lookup(
    rates: Mapping[tuple[str | None, str | None, str | None], Rate],
    model: str,
    pool: str | None,
    agent_type: str | None,
) -> Rate | None:
    for named_model, named_pool, named_agent in _LOOKUP_ORDER:
        if (named_pool and pool is None) or (named_agent and agent_type is None):
            continue
        key = (
            model if named_model else None,
            pool if named_pool else None,
            agent_type if named_agent else None,
        )
        rate = rates.get(key)
        if rate is not None:
            return rate
    return None


def _dotted(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(part) for part in loc)


def _check_consistency(document: PriceBookDocument) -> None:
    for index, book in enumerate(document.books):
        where = f"books.{index}"
        if book.effective_to is not None and book.effective_to <= book.effective_from:
            raise ConfigError("must be later than effective_from", path=f"{where}.effective_to")
        seen_ids: set[str] = set()
        seen_keys: set[tuple[str | None, str | None, str | None]] = set()
        for rate_index, rate in enumerate(book.rates):
            if rate.id in seen_ids:
                raise ConfigError(
                    f"duplicate rate id {rate.id!r}", path=f"{where}.rates.{rate_index}.id"
                )
            if rate.key in seen_keys:
                raise ConfigError(
                    "another rate of this book matches the same model, pool and agent type",
                    path=f"{where}.rates.{rate_index}",
                )
            seen_ids.add(rate.id)
            seen_keys.add(rate.key)
        for other_index, other in enumerate(document.books[:index]):
            if other.name == book.name:
                raise ConfigError(f"duplicate book name {book.name!r}", path=f"{where}.name")
            if other.tenant == book.tenant and _overlap(other, book):
                whose = f"tenant {book.tenant!r}" if book.tenant else "general"
                raise ConfigError(
                    f"overlaps books.{other_index} ({other.name!r}), another {whose} book",
                    path=f"{where}.effective_from",
                )
    for tenant, discount in document.discounts.items():
        if discount > 1:
            raise ConfigError(
                "a discount is a fraction between 0 and 1", path=f"discounts.{tenant}"
            )


def _overlap(first: Book, second: Book) -> bool:
    first_end = first.effective_to or dt.datetime.max.replace(tzinfo=dt.UTC)
    second_end = second.effective_to or dt.datetime.max.replace(tzinfo=dt.UTC)
    return first.effective_from < second_end and second.effective_from < first_end


def parse_price_book(data: Any, *, version: int = 0, source: str = "pricing") -> PriceBook:
    """Validate a parsed document; raises ConfigError with ``source:path: reason``."""
    if not isinstance(data, Mapping):
        raise ConfigError("a price book document must be a mapping", path=source)
    try:
        document = PriceBookDocument.model_validate(data)
    except ValidationError as exc:
        error = exc.errors()[0]
        path = _dotted(tuple(error["loc"]))
        reason = str(error["msg"]).removeprefix("Value error, ")
        raise ConfigError(reason, path=f"{source}:{path}" if path else source) from None
    try:
        _check_consistency(document)
    except ConfigError as exc:
        raise ConfigError(exc.reason, path=f"{source}:{exc.path}") from None
    return PriceBook(document, version)


def parse_price_book_yaml(text: str, *, version: int = 0, source: str = "pricing") -> PriceBook:
    """Parse and validate YAML text (see :func:`parse_price_book`)."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"not valid YAML: {exc}", path=source) from None
    return parse_price_book(data, version=version, source=source)


def load_price_book(path: Path | str) -> PriceBook:
    """Read and validate ``pricing.yaml``; raises ConfigError (file, YAML path, reason)."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read the price book: {exc.strerror}", path=str(file)) from None
    return parse_price_book_yaml(text, source=str(file))


def document_json(book: PriceBook) -> dict[str, Any]:
    """The document as canonical JSON data (prices and times as strings)."""
    return book.document.model_dump(mode="json", exclude_none=True)


class ActivePriceBook:
    """The price book in force in this process; a bad replacement leaves it unchanged."""

    def __init__(self, book: PriceBook) -> None:
        self._book = book

    @property
    def book(self) -> PriceBook:
        """The active price book."""
        return self._book

    def replace(self, book: PriceBook) -> None:
        """Make an already validated book active."""
        self._book = book

    def reload(self, path: Path | str) -> PriceBook:
        """Load a file and make it active; on a ConfigError the active book is kept."""
        book = load_price_book(path)
        self._book = book
        return book
