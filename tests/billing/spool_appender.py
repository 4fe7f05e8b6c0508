"""A process that appends usage records to a spool until it is killed.

``python -m tests.billing.spool_appender DIR`` prints each record's request id on
stdout once its append has returned (so the record is durable), with several
appends in flight at any time; the test kills it with SIGKILL mid-batch.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from billing.spool import Spool
from tests.billing.conftest import make_record


async def main(directory: Path) -> None:
    spool = Spool(directory, segment_bytes=64 * 1024)  # small: rotation happens too
    await spool.open()
    out = sys.stdout

    async def appender(worker: int) -> None:
        n = 0
        while True:
            request_id = f"w{worker}-{n}"
            await spool.append(make_record(request_id).to_bytes())
            out.write(request_id + "\n")
            out.flush()
            n += 1

    await asyncio.gather(*(appender(worker) for worker in range(8)))


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1])))
