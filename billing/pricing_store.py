"""Price books in SQL: every applied document is a new version all replicas see.

``pricing apply`` validates a file and stores it as version ``latest + 1`` (the
same document again is not a new version). Replicas poll :meth:`PriceBookStore.
latest_version` (one indexed read) and load a newer version when one appears; a
record stores the version it was priced with, so its cost can be recomputed.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass

from sqlalchemy import func, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from billing.boundary import foreign_errors
from billing.pricing import ActivePriceBook, PriceBook, document_json, parse_price_book
from billing.tables import price_books
from billing.usage import from_epoch_us


@dataclass(frozen=True, slots=True)
class StoredVersion:
    """One stored price book version (without its document)."""

    version: int
    sha256: str
    created_at_us: int
    note: str | None

    @property
    def created_at(self) -> str:
        """Creation time, ISO 8601 in UTC."""
        return from_epoch_us(self.created_at_us).isoformat().replace("+00:00", "Z")


def document_digest(book: PriceBook) -> str:
    """SHA-256 of the canonical JSON of a document (same rates, same digest)."""
    canonical = json.dumps(document_json(book), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


class PriceBookStore:
    """Stored price book versions in the billing database."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def apply(self, book: PriceBook, *, source: str, note: str | None = None) -> PriceBook:
        """Store a validated document as the next version; returns it with its version.

        Applying the document that is already the latest returns that version.
        """
        digest = document_digest(book)
        canonical = json.dumps(document_json(book), sort_keys=True)
        for _ in range(5):
            with foreign_errors("storing a price book"):
                async with self.engine.begin() as conn:
                    latest = (
                        await conn.execute(
                            select(price_books.c.version, price_books.c.sha256)
                            .order_by(price_books.c.version.desc())
                            .limit(1)
                        )
                    ).first()
                    if latest is not None and latest.sha256 == digest:
                        return book.with_version(int(latest.version))
                    version = (int(latest.version) if latest is not None else 0) + 1
                    try:
                        await conn.execute(
                            insert(price_books).values(
                                version=version,
                                document=canonical,
                                source=source,
                                sha256=digest,
                                created_at_us=time.time_ns() // 1000,
                                note=note,
                            )
                        )
                    except IntegrityError:
                        continue  # another replica applied a version at the same time
                    return book.with_version(version)
        raise RuntimeError("could not store the price book: too many concurrent versions")

    async def latest_version(self) -> int | None:
        """The newest stored version number, or None when none is stored."""
        with foreign_errors("reading price books"):
            async with self.engine.connect() as conn:
                value = (await conn.execute(select(func.max(price_books.c.version)))).scalar()
        return int(value) if value is not None else None

    async def get(self, version: int | None = None) -> PriceBook | None:
        """A stored version (the latest when ``version`` is None), or None."""
        query = select(price_books.c.version, price_books.c.document)
        if version is None:
            query = query.order_by(price_books.c.version.desc()).limit(1)
        else:
            query = query.where(price_books.c.version == version)
        with foreign_errors("reading price books"):
            async with self.engine.connect() as conn:
                row = (await conn.execute(query)).first()
        if row is None:
            return None
        return parse_price_book(
            json.loads(row.document), version=int(row.version), source=f"version {row.version}"
        )

    async def source(self, version: int) -> str | None:
        """The YAML text a version was applied from."""
        with foreign_errors("reading price books"):
            async with self.engine.connect() as conn:
                value = (
                    await conn.execute(
                        select(price_books.c.source).where(price_books.c.version == version)
                    )
                ).scalar()
        return str(value) if value is not None else None

    async def versions(self) -> list[StoredVersion]:
        """Every stored version, newest first."""
        with foreign_errors("reading price books"):
            async with self.engine.connect() as conn:
                rows = await conn.execute(
                    select(
                        price_books.c.version,
                        price_books.c.sha256,
                        price_books.c.created_at_us,
                        price_books.c.note,
                    ).order_by(price_books.c.version.desc())
                )
                return [
                    StoredVersion(int(r.version), r.sha256, int(r.created_at_us), r.note)
                    for r in rows
                ]

    async def refresh(self, active: ActivePriceBook) -> bool:
        """Load the latest stored version into ``active`` if it is newer; returns whether."""
        latest = await self.latest_version()
        if latest is None or latest == active.book.version:
            return False
        book = await self.get(latest)
        if book is None:
            return False
        active.replace(book)
        return True
