"""Messages/s into one chat through its ChatActor, with and without group commit.

    python -m bench.group_commit [--senders 50] [--messages 2000] [--runs 3]

Drives the real actor core and a real SQLite file (WAL, synchronous=NORMAL) in a temp dir;
no HTTP, so the figure is the write path's ceiling. Group commit is switched off by setting
``group_commit_max=1`` (one transaction per message). Prints the median of ``--runs``.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import trio

from fechatter.actors.chat import SendMessage
from fechatter.actors.directory import Directory, DirectoryConfig
from fechatter.actors.user import UserHub
from fechatter.models import ChatType, NewMessage, Role
from fechatter.storage.sqlite import open_sqlite_storage


async def one_run(folder: Path, senders: int, messages: int, batch_max: int) -> tuple[float, int]:
    async with open_sqlite_storage(str(folder / f"bench-{batch_max}-{time.time_ns()}.db")) as st:
        ids = []
        for i in range(senders):
            user, _ = await st.create_user(f"u{i}", f"u{i}@example.com", "x", None)
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


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--senders", type=int, default=50)
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for label, batch_max in (("group commit (max 256)", 256), ("one txn per message", 1)):
            rates, txns = [], []
            for _ in range(args.runs):
                rate, t = await one_run(Path(tmp), args.senders, args.messages, batch_max)
                rates.append(rate)
                txns.append(t)
            print(
                f"{label:24s} median {statistics.median(rates):8.0f} msg/s  "
                f"runs {[round(r) for r in rates]}  transactions {txns}"
            )


if __name__ == "__main__":
    trio.run(main)
