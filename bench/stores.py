"""Balance store throughput: credits/s and CPU microseconds per credit.

    .venv/bin/python bench/stores.py [--n 50000] [--concurrency 50] [--stores sqlite,memory]
        [--accounts 1] [--outbox]

Each of ``concurrency`` tasks credits in a loop until ``n`` credits are acknowledged,
spread over ``--accounts`` account keys, each credit with a random 64-hex-digit
idempotency key (the receiver uses the Prepare's condition) or none. CPU is
``time.process_time()`` for the whole process (event loop + writer thread), so it is
the real cost of a credit. Redis and PostgreSQL run against the local services
(``--stores redis,postgres``); their server-side CPU is not counted.

``--outbox`` writes a webhook event with every credit (``add_with_outbox``, an event
that never merges: a PSK2 request's), so the two runs compare the cost of the outbox
write on each store's credit path.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import tempfile
import time
import uuid

from ilp_receiver.stores import BalanceStore, open_store
from ilp_receiver.stores.outbox import OutboxEntry

#: the constant data of a PSK2 request's event, as the receiver writes it
_DATA = '{"asset":{"code":"XRP","scale":9},"payment_id":null,"protocol":"psk2-draft2"}'


async def run(
    store: BalanceStore,
    n: int,
    concurrency: int,
    idempotency: bool,
    accounts: int,
    outbox: bool = False,
) -> None:
    counter = itertools.count()
    keys = [os.urandom(32).hex() if idempotency else None for _ in range(n)]

    async def worker() -> None:
        while (i := next(counter)) < n:
            account = f"acct-{i % accounts}"
            if outbox:
                event = OutboxEntry("payment.received", account, 1000, _DATA, None, 1.0)
                await store.add_with_outbox(account, 1000, [event], idempotency_key=keys[i])
            else:
                await store.credit(account, 1000, idempotency_key=keys[i])

    await asyncio.gather(*(worker() for _ in range(concurrency)))


async def bench(
    url: str,
    n: int,
    concurrency: int,
    idempotency: bool,
    prefix: str | None,
    accounts: int,
    outbox: bool = False,
) -> str:
    store = open_store(url, prefix=prefix)
    async with store:
        await run(store, min(n, 2000), concurrency, idempotency, accounts, outbox)  # warm up
        wall, cpu = time.perf_counter(), time.process_time()
        await run(store, n, concurrency, idempotency, accounts, outbox)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return (
        f"{n / wall:>10,.0f} credits/s  {cpu / n * 1e6:>7.1f} µs CPU/credit"
        f"  (n={n}, concurrency={concurrency}, idempotency keys={idempotency}"
        f"{', outbox' if outbox else ''})"
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=50_000)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--stores", default="memory,sqlite")
    parser.add_argument("--accounts", type=int, default=1)
    parser.add_argument(
        "--outbox", action="store_true", help="also write a webhook event per credit"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tag = uuid.uuid4().hex[:8]
        urls = {
            "memory": ("memory:", None),
            "sqlite": (os.path.join(tmp, "bench.db"), None),
            "redis": ("redis://127.0.0.1:6379/15", f"bench{tag}:"),
            "postgres": ("postgresql://127.0.0.1:5432/test", f"bench{tag}_"),
        }
        for name in args.stores.split(","):
            url, prefix = urls[name]
            for idempotency in (True, False):
                line = await bench(
                    url, args.n, args.concurrency, idempotency, prefix, args.accounts, args.outbox
                )
                print(f"{name:<9}{line}", flush=True)
            await cleanup(name, url, prefix)


async def cleanup(name: str, url: str, prefix: str | None) -> None:
    """Drop the Redis keys / PostgreSQL tables a run created."""
    if name == "redis" and prefix:
        import redis.asyncio as aioredis

        client = aioredis.Redis.from_url(url)
        keys = [key async for key in client.scan_iter(match=prefix + "*", count=1000)]
        for start in range(0, len(keys), 1000):
            await client.delete(*keys[start : start + 1000])
        await client.aclose()
    elif name == "postgres" and prefix:
        import asyncpg  # type: ignore[import-untyped]

        conn = await asyncpg.connect(url)
        for table in ("balances", "idempotency", "meta", "outbox"):
            await conn.execute(f'DROP TABLE IF EXISTS "{prefix}{table}"')
        await conn.close()


if __name__ == "__main__":
    asyncio.run(main())
