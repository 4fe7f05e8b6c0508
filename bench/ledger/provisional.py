"""The metering cost a stream pays on the gateway's event loop, with and without the
provisional record journaled at its first byte (issue: streams cut by a crash).

Side by side in one run, ``--repeat`` rounds (medians): per stream, the final record
alone (price, build, journal write: what every stream paid before) and the
provisional record (scheduled at the first byte, built and written at the end of
that turn of the event loop, here alone in its ``write``, the worst case: a turn's
provisional records share one; the journal, no Redis: each record is also appended
to the local spool).

    python -m bench.ledger.provisional [--streams 5000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from decimal import Decimal
from pathlib import Path

from bench.machine import cpu_model, load_average
from billing.tables import create_all
from billing.usage import UsageSource
from gateway.database import create_engine, default_database_url
from gateway.metering import Metering
from gateway.outcome import RequestRecord

PRICES = """
books:
  - name: bench
    effective_from: 2020-01-01T00:00:00Z
    rates:
      - {id: default, input_per_million: "1.00", output_per_million: "2.00"}
"""


async def one_round(streams: int) -> tuple[float, float]:
    """(final record µs, provisional record µs), medians over ``streams`` streams."""
    with tempfile.TemporaryDirectory(prefix="tollway-bench-provisional-") as directory:
        data = Path(directory)
        (data / "pricing.yaml").write_text(PRICES)
        engine = create_engine(default_database_url(data))
        await create_all(engine)
        metering = Metering(
            engine=engine,
            data_dir=data,
            redis=None,
            pricing_path=str(data / "pricing.yaml"),
            gpu_hour_usd={"p": Decimal("3.60")},
            journal=True,
            run_writer=False,
        )
        await metering.start()
        finals: list[float] = []
        provisionals: list[float] = []
        try:
            for i in range(streams):
                record = RequestRecord(
                    f"bench-{i}",
                    "/v1/chat/completions",
                    tenant_id="t1",
                    key_id="k1",
                    model="m",
                    route="pool:p",
                    worker="w0",
                    stream=True,
                )
                started = time.perf_counter()
                metering.provisional(record, lambda: 120)  # the first byte's hook
                assert metering.journal is not None
                metering.journal._write_later()  # what the turn's end does (a write of one)
                middle = time.perf_counter()
                record.usage = {"prompt_tokens": 120, "completion_tokens": 30}
                quote = metering.quote(record, 0.01)
                usage = metering.usage_record(record, 0.01, quote, UsageSource.UPSTREAM)
                await metering.commit(usage)
                finals.append(time.perf_counter() - middle)
                provisionals.append(middle - started)
                if i % 64 == 63:
                    await asyncio.sleep(0)  # the journal ships what this turn wrote
        finally:
            await metering.stop()
            await engine.dispose()
    return statistics.median(finals) * 1e6, statistics.median(provisionals) * 1e6


async def main(streams: int, repeat: int) -> None:
    rounds = [await one_round(streams) for _ in range(repeat)]
    final = statistics.median(r[0] for r in rounds)
    provisional = statistics.median(r[1] for r in rounds)
    print(f"machine: {cpu_model()}, load {load_average()}")
    for name, value, index in (("final", final, 0), ("provisional", provisional, 1)):
        runs = [round(r[index], 1) for r in rounds]
        print(f"{name} record per stream: {value:6.1f} µs (rounds {runs})")
    print(f"metering per stream: +{provisional / final:.0%} with the provisional record")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=5000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    asyncio.run(main(args.streams, args.repeat))
