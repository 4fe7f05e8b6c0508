"""A process that records usage in a journal until it is killed.

``python -m tests.billing.journal_writer JOURNAL_DIR SPOOL_DIR`` records usage
records through a :class:`billing.journal.Journal` whose buffer is a spool in
``SPOOL_DIR`` that answers slowly (so records are in flight at any moment), and
prints each request id once ``record`` has returned; the test kills it with SIGKILL.
"""

from __future__ import annotations

import asyncio
import random
import sys
from pathlib import Path

from billing.journal import Journal
from billing.spool import Spool
from tests.billing.conftest import make_record


async def main(journal_dir: Path, spool_dir: Path) -> None:
    spool = Spool(spool_dir)
    await spool.open()
    rng = random.Random(7)

    async def slow_ship(payloads: list[bytes]) -> None:
        await asyncio.sleep(rng.uniform(0, 0.05))
        await asyncio.gather(*[spool.submit(payload) for payload in payloads])

    journal = Journal(journal_dir, slow_ship, segment_bytes=16 * 1024, segment_age_s=0.2)
    await journal.open()
    out = sys.stdout
    n = 0
    while True:
        request_id = f"j-{n}"
        journal.record(make_record(request_id).to_bytes())
        out.write(request_id + "\n")
        out.flush()
        n += 1
        if n % 20 == 0:
            await asyncio.sleep(0.001)


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]), Path(sys.argv[2])))
