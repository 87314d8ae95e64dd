"""``cluster_scale``: throughput and fan-out against 1, 2, … N nodes on this host, in one run.

``python -m bench run cluster_scale [--cluster N] [--quick]`` starts its own PostgreSQL
(``tests/pg.py``, embedded; fsync off, the test settings) and ``nats-server`` with JetStream
(``tests/nats.py``), prepares one world (users, ``chats`` chats of ``members`` members, one
``fan_members`` channel) once and clones its database for each variant, then runs, for each
node count ``n`` in 1..N (1: one ``fechatter serve`` on PostgreSQL without NATS, the
baseline; at full size also 1 with NATS, ``bus`` true; n ≥ 2: n nodes with ``--nats-url``
and the variant's own ``nats_prefix``):

- **ownership**: one message per chat posted (HTTP) to node ``k % n`` before anything is
  measured, so chat ``k`` is owned there; the fan-out channel is owned by node A.
- **streams**: one per user (half SSE, half WebSocket), user ``i`` on node ``i % n``: a
  chat's members are spread over the nodes as a load balancer would spread them.
- **throughput**: ``senders`` closed-loop WebSocket senders (``send`` op, wait for the ack,
  repeat) for ``seconds``; sender ``k`` writes chat ``k`` through node ``(k + k // n) % n``,
  so about 1/n of the sends reach the owner directly and the rest are forwarded (n ≥ 2).
- **fanout**: one sender posts ``messages`` at ``rate``/s over HTTP to node A into the
  channel; every online member counts each message.

Each phase gives one row (``scenario`` ``cluster_scale``, ``phase``, ``nodes``): messages/s
persisted and acknowledged, deliveries/s, send→ack and send→delivery p50/p99, CPU per message
and per delivery of the fechatter processes (each, and summed), PostgreSQL (postmaster +
backends), nats-server, and all of them (``cpu_us_per_message_total``), and the server-side
fan-out time per event from each node's ``/metrics`` (``fechatter_fanout_seconds``: commit →
bytes handed to the kernel for every local stream, and hub → same), per node and over all.
CPU comes from ``/proc/<pid>/stat`` over the phase's window (first send → last delivery).

Pinning (``os.sched_setaffinity``, as ``taskset``): every fechatter process on core 0, the load
generator on core 1; PostgreSQL and nats-server float over both cores (they are measured, not
pinned: they would take a core from either side). n nodes therefore share one core: the rows
compare **cost**, not capacity.
"""

from __future__ import annotations

import os
import re
import secrets
import sys
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import trio

from bench.cluster_fanout import log_tail, postmaster_pid
from bench.harness import Server, World, cpu_seconds, prepare, run_server, tree_cpu_seconds
from bench.loadgen import StreamClient, WsSender
from bench.scenarios import Outcome, my_cpu, open_streams, pct, profile, settle, summary
from fechatter.metrics import FANOUT_BOUNDS, FanoutTimes, bucket_quantile

NAMES = "ABCDEFGH"
CATCH_UP = 30.0  # seconds for every stream to get every message after the last send
SETTLE_LIMIT = 15.0  # cluster nodes have periodic work (heartbeats, sweeper): do not wait long
FAN_MARK = 900_000_000  # fan-out markers start here (throughput markers are k·10⁷ + count)


@dataclass
class Node:
    """One node of a variant, with the streams connected to it and its sends."""

    name: str
    server: Server
    clients: list[StreamClient] = field(default_factory=list)
    sends: int = 0  # messages acknowledged through this node in the current phase


@dataclass
class Window:
    """CPU seconds (and fan-out histograms) at the start of a phase's window."""

    nodes: list[float]
    postgres: float
    nats: float
    generator: float
    fanout: list[tuple[list[int], list[int]]]  # per node: (hub, commit) bucket counts
    t0: float


def measure_observe_cost(rounds: int = 200_000) -> float:
    """µs per event of what the hub adds to time one event (two ``time.time()`` and one
    ``FanoutTimes.observe``), measured in this process."""
    times = FanoutTimes()
    start = time.perf_counter()
    for _ in range(rounds):
        a = time.time()
        b = time.time()
        times.observe(b - a, b - a)
    return (time.perf_counter() - start) / rounds * 1e6


_BUCKET = re.compile(r'^fechatter_fanout_seconds_bucket\{le="([^"]+)",stage="(\w+)"\} (\S+)$')


async def fanout_counts(http: httpx.AsyncClient, server: Server) -> tuple[list[int], list[int]]:
    """The node's ``fechatter_fanout_seconds`` histograms (hub, commit) as per-bucket counts."""
    text = (await http.get(f"{server.api_url}/metrics")).text
    cumulative: dict[str, list[float]] = {"hub": [], "commit": []}
    for line in text.splitlines():
        if m := _BUCKET.match(line):
            cumulative[m.group(2)].append(float(m.group(3)))
    per: list[list[int]] = []
    for stage in ("hub", "commit"):
        values = cumulative[stage]
        assert len(values) == len(FANOUT_BOUNDS) + 1, f"{stage}: {len(values)} buckets"
        per.append([round(v - (values[k - 1] if k else 0)) for k, v in enumerate(values)])
    return per[0], per[1]


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 2)


async def cluster_scale(
    max_nodes: int,
    chats: int,
    members: int,
    senders: int,
    seconds: float,
    fan_members: int,
    messages: int,
    rate: float,
    bus_baseline: bool = False,
) -> Outcome:
    """Run node counts 1..``max_nodes`` (see the module doc); two rows per count (phases
    ``throughput`` and ``fanout``), latencies in ms, CPU in µs. ``bus_baseline`` adds one
    node *with* NATS after the plain one (rows ``nodes`` 1, ``bus`` true): the cluster path
    (outbox, JetStream, EventRouter, Sequencer) without forwarding, so the 2-node cost splits
    into the price of the bus and the price of a second node. Every row names ``bus``."""
    from tests.nats import NatsServer
    from tests.pg import PgServer

    if not (senders <= chats and fan_members <= chats * members and max_nodes <= len(NAMES)):
        raise ValueError("need senders ≤ chats, fan_members ≤ chats·members, ≤ 8 nodes")
    out = Outcome()
    cost = measure_observe_cost()
    print(f"fan-out timing: {cost:.3f} µs per event", file=sys.stderr, flush=True)
    pgstat = StatementStats.from_env()
    pg = await trio.to_thread.run_sync(PgServer.create, pgstat.settings() if pgstat else None)
    try:
        nats = await trio.to_thread.run_sync(NatsServer.create)
        try:
            assert nats._process is not None
            pids = (postmaster_pid(pg.data), nats._process.pid)
            source = await trio.to_thread.run_sync(pg.new_database)
            world = await prepare(source, chats * members, [members] * chats + [fan_members])
            run = secrets.token_hex(3)
            variants = [(1, False)] + [(1, True)] * bus_baseline
            variants += [(n, True) for n in range(2, max_nodes + 1)]
            for n, bus in variants:
                name = f"scale{run}n{n}{'b' * (n == 1 and bus)}"
                url = await trio.to_thread.run_sync(_clone, pg, source, name)
                label = f"{n}{'b' * (n == 1 and bus)}"
                stats = pgstat.bind(pg, label) if pgstat else None
                rows, samples = await one_variant(
                    n, bus, world, url, nats.url, f"x{name}", pids, senders, seconds,
                    messages, rate, stats,
                )  # fmt: skip
                for row in rows:
                    row["bus"] = bus
                    row["fanout_timing_us_per_event"] = round(cost, 3)
                out.rows += rows
                out.latencies.update(samples)
        finally:
            await trio.to_thread.run_sync(nats.stop_and_remove)
    finally:
        await trio.to_thread.run_sync(pg.stop_and_remove)
    return out


@dataclass(frozen=True)
class StatementStats:
    """``BENCH_PGSTAT=<folder>``: PostgreSQL's own account of the statements it ran during each
    throughput phase, from ``pg_stat_statements`` (shipped with the embedded server; loaded
    with ``track = all``, so statements inside PL/pgSQL functions count on their own, and
    ``track_planning = on``, so planning is apart from execution). One file per variant,
    ``cluster_scale-<n>[b]-throughput.pgstat.txt``: per statement, calls, execution and
    planning time per message (µs, wall time inside PostgreSQL: waits for locks or a core
    count too) and rows, sorted by plan + exec. How the group commit's re-planning was found
    (docs/storage.md "Planning the group commit"). Not for the committed rows: the extension
    costs a little on every statement."""

    folder: Path

    @classmethod
    def from_env(cls) -> StatementStats | None:
        folder = os.environ.get("BENCH_PGSTAT")
        return cls(Path(folder)) if folder else None

    def settings(self) -> dict[str, str]:
        from tests.pg import TEST_SETTINGS

        return {
            **TEST_SETTINGS,
            "shared_preload_libraries": "'pg_stat_statements'",
            "pg_stat_statements.track": "all",
            "pg_stat_statements.track_planning": "on",
        }

    def bind(self, pg: Any, label: str) -> BoundStats:
        self.folder.mkdir(parents=True, exist_ok=True)
        with pg.connect("postgres") as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        return BoundStats(pg, self.folder / f"cluster_scale-{label}")


@dataclass(frozen=True)
class BoundStats:
    """``StatementStats`` of one variant: ``reset`` before a phase, ``dump`` after it."""

    pg: Any
    stem: Path

    def reset(self) -> None:
        with self.pg.connect("postgres") as conn:
            conn.execute("SELECT pg_stat_statements_reset()")

    def dump(self, phase: str, messages: int) -> None:
        with self.pg.connect("postgres") as conn:
            found = conn.execute(
                "SELECT calls, total_exec_time, total_plan_time, rows, query"
                " FROM pg_stat_statements"
                " ORDER BY total_exec_time + total_plan_time DESC LIMIT 40"
            ).fetchall()
        per = 1000.0 / max(messages, 1)  # ms in total → µs per message
        lines = [f"{messages} messages; per message: calls, exec µs, plan µs; rows; statement"]
        for calls, exec_ms, plan_ms, rows, query in found:
            text = " ".join(query.split())[:400]
            lines.append(
                f"{calls / max(messages, 1):8.3f} {exec_ms * per:9.1f} {plan_ms * per:9.1f}"
                f" {rows:>9}  {text}"
            )
        Path(f"{self.stem}-{phase}.pgstat.txt").write_text("\n".join(lines) + "\n")


def _clone(pg: Any, source: str, name: str) -> str:
    """A copy of the prepared database ``source`` (its URL's last path part) named ``name``."""
    with pg.connect() as conn:
        conn.autocommit = True
        conn.execute(f"CREATE DATABASE {name} TEMPLATE {source.rsplit('/', 1)[1]}")
    return str(pg.url(name))


@asynccontextmanager
async def start_nodes(
    n: int, bus: bool, database_url: str, nats_url: str, prefix: str
) -> AsyncIterator[list[Node]]:
    """``n`` nodes on ``database_url`` (``bus``: with NATS), each pinned to core 0."""
    async with AsyncExitStack() as stack:
        nodes = []
        for name in NAMES[:n]:
            args = ["--node-id", name]
            env: dict[str, str] = {}
            if bus:
                args += ["--nats-url", nats_url]
                env["FECHATTER_NATS_PREFIX"] = prefix
            server, _ = await stack.enter_async_context(run_server(database_url, env, args))
            nodes.append(Node(name, server))
        yield nodes


async def one_variant(
    n: int,
    bus: bool,
    world: World,
    database_url: str,
    nats_url: str,
    prefix: str,
    pids: tuple[int, int],
    senders: int,
    seconds: float,
    messages: int,
    rate: float,
    pgstat: BoundStats | None = None,
) -> tuple[list[dict[str, Any]], dict[str, list[float]]]:
    chat_ids = list(world.chats)
    work, fan_chat = chat_ids[:-1], chat_ids[-1]
    owner = {"Authorization": f"Bearer {world.tokens[world.sender]}"}
    rows: list[dict[str, Any]] = []
    samples: dict[str, list[float]] = {}
    print(f"-- cluster_scale: {n} node(s){' with NATS' * bus}", file=sys.stderr, flush=True)
    async with (
        start_nodes(n, bus, database_url, nats_url, prefix) as nodes,
        httpx.AsyncClient(timeout=30) as http,
    ):
        # Ownership: chat k on node k % n, the channel on A (nothing here is measured).
        for k, chat in enumerate([*work, fan_chat]):
            node = nodes[k % n if chat != fan_chat else 0]
            r = await http.post(
                f"{node.server.api_url}/api/chats/{chat}/messages",
                headers=owner,
                json={"content": "warm-up"},
            )
            r.raise_for_status()
        users = sorted({u for c in work for u in world.chats[c]})
        async with trio.open_nursery() as nursery:
            for i, node in enumerate(nodes):
                node.clients = await open_streams(nursery, node.server, world, users[i::n])
            by_user: dict[int, StreamClient] = {}
            for i, node in enumerate(nodes):
                by_user.update(zip(users[i::n], node.clients, strict=True))
            conns: list[tuple[Node, WsSender]] = []
            for k in range(senders):
                node = nodes[(k + k // n) % n]
                conn = WsSender(world.tokens[world.chats[work[k]][0]])
                await nursery.start(conn.run, node.server.realtime_host, node.server.realtime_port)
                conns.append((node, conn))
            async with trio.open_nursery() as settling:
                for node in nodes:
                    settling.start_soon(partial(settle, node.server, limit=SETTLE_LIMIT))
            if pgstat:
                await trio.to_thread.run_sync(pgstat.reset)
            row, lat = await throughput_phase(
                n, nodes, world, work, conns, by_user, seconds, pids, http
            )
            if pgstat:
                await trio.to_thread.run_sync(pgstat.dump, "throughput", row["messages"])
            rows.append(row)
            samples.update(lat)
            for c in by_user.values():
                c.arrivals.clear()
                c.duplicates = 0
            row, lat = await fanout_phase(
                n, nodes, world, fan_chat, by_user, messages, rate, pids, http
            )
            rows.append(row)
            samples.update(lat)
            nursery.cancel_scope.cancel()
    for row in rows:
        if row["delivered"] != row["expected"] or row["duplicates"]:
            print(f"INCOMPLETE {n} nodes {row['phase']}: {row}", file=sys.stderr)
            for node in nodes:
                print(f"--- node {node.name}:\n{log_tail(node.server)}", file=sys.stderr)
    return rows, samples


async def begin(nodes: list[Node], pids: tuple[int, int], http: httpx.AsyncClient) -> Window:
    fanout = [await fanout_counts(http, node.server) for node in nodes]
    for node in nodes:
        node.sends = 0
    return Window(
        [node.server.cpu() for node in nodes],
        tree_cpu_seconds(pids[0]),
        cpu_seconds(pids[1]),
        my_cpu(),
        fanout,
        time.perf_counter(),
    )


async def finish(
    window: Window,
    nodes: list[Node],
    pids: tuple[int, int],
    http: httpx.AsyncClient,
    total: int,
    delivered: int,
) -> dict[str, Any]:
    """The row's CPU and server fan-out fields for the window that ends now."""
    elapsed = time.perf_counter() - window.t0
    node_cpu = [node.server.cpu() - c0 for node, c0 in zip(nodes, window.nodes, strict=True)]
    pg_cpu = tree_cpu_seconds(pids[0]) - window.postgres
    nats_cpu = cpu_seconds(pids[1]) - window.nats
    gen = my_cpu() - window.generator
    after = [await fanout_counts(http, node.server) for node in nodes]
    pairs = list(zip(window.fanout, after, strict=True))
    hub = [[b - a for a, b in zip(w[0], x[0], strict=True)] for w, x in pairs]
    com = [[b - a for a, b in zip(w[1], x[1], strict=True)] for w, x in pairs]
    hub_all = [sum(col) for col in zip(*hub, strict=True)]
    com_all = [sum(col) for col in zip(*com, strict=True)]
    fechatter = sum(node_cpu)
    everything = fechatter + pg_cpu + nats_cpu
    per_msg = 1e6 / max(1, total)
    per_del = 1e6 / max(1, delivered)

    def by_node(values: list[float]) -> str:
        return "/".join(str(v) for v in values)

    return {
        "seconds": round(elapsed, 2),
        "messages_per_s": round(total / elapsed, 1),
        "messages_per_s_by_node": by_node([round(node.sends / elapsed, 1) for node in nodes]),
        "deliveries_per_s": round(delivered / elapsed),
        "deliveries_per_s_by_node": by_node(
            [round(sum(len(c.arrivals) for c in node.clients) / elapsed) for node in nodes]
        ),
        # Server-side fan-out per event and node (FanoutTimes): commit → last byte to the
        # kernel, and hub → same; "all" pools every node's events.
        "server_fanout_p50_ms": _ms(bucket_quantile(com_all, 0.5)),
        "server_fanout_p99_ms": _ms(bucket_quantile(com_all, 0.99)),
        "server_fanout_p99_ms_by_node": by_node([_ms(bucket_quantile(c, 0.99)) for c in com]),
        "hub_fanout_p50_ms": _ms(bucket_quantile(hub_all, 0.5)),
        "hub_fanout_p99_ms": _ms(bucket_quantile(hub_all, 0.99)),
        "fanout_events_timed": sum(com_all),
        "cpu_us_per_message_by_node": by_node([round(c * per_msg) for c in node_cpu]),
        "fechatter_cpu_us_per_message": round(fechatter * per_msg),
        "postgres_cpu_us_per_message": round(pg_cpu * per_msg),
        "nats_cpu_us_per_message": round(nats_cpu * per_msg),
        "cpu_us_per_message_total": round(everything * per_msg),
        "cpu_us_per_delivery_total": round(everything * per_del, 2),
        # Shares of one core over the window (CPU seconds / wall seconds).
        "fechatter_cpu_share": round(fechatter / elapsed, 3),
        "postgres_cpu_share": round(pg_cpu / elapsed, 3),
        "nats_cpu_share": round(nats_cpu / elapsed, 3),
        "generator_cpu_share": round(gen / elapsed, 3),
        "generator_cpu_us_per_delivery": round(gen * per_del, 2),
    }


async def throughput_phase(
    n: int,
    nodes: list[Node],
    world: World,
    work: list[int],
    conns: list[tuple[Node, WsSender]],
    by_user: dict[int, StreamClient],
    seconds: float,
    pids: tuple[int, int],
    http: httpx.AsyncClient,
) -> tuple[dict[str, Any], dict[str, list[float]]]:
    sent_at: dict[int, float] = {}
    acks: list[float] = []
    counts = [0] * len(conns)

    async def loop(k: int, node: Node, conn: WsSender, deadline: float) -> None:
        chat = work[k]
        while time.perf_counter() < deadline:
            mark = k * 10_000_000 + counts[k]
            sent_at[mark] = time.perf_counter()
            acks.append(await conn.send(chat, f"t{mark}", f"bench#{mark}# hello") * 1000)
            counts[k] += 1
            node.sends += 1

    window = await begin(nodes, pids, http)
    async with trio.open_nursery() as load:
        for k, (node, conn) in enumerate(conns):
            load.start_soon(loop, k, node, conn, window.t0 + seconds)
        for node in nodes:  # BENCH_PYSPY=<folder>: a py-spy profile of each node
            load.start_soon(profile, node.server, seconds, f"cluster_scale-{n}-{node.name}")
    expected = 0
    waiting: list[StreamClient] = []
    for k in range(len(conns)):
        for uid in world.chats[work[k]]:
            by_user[uid].expect(counts[k])
            waiting.append(by_user[uid])
            expected += counts[k]
    with trio.move_on_after(CATCH_UP):
        for c in waiting:
            await c.done.wait()
    total = sum(counts)
    clients = list(by_user.values())
    delivered = sum(len(c.arrivals) for c in clients)
    row: dict[str, Any] = {
        "scenario": "cluster_scale",
        "phase": "throughput",
        "nodes": n,
        "chats": len(conns),
        "members": len(world.chats[work[0]]),
        "messages": total,
        **await finish(window, nodes, pids, http, total, delivered),
    }
    lat = [(t - sent_at[m]) * 1000 for c in clients for m, t in c.arrivals.items()]
    row.update(
        ack_p50_ms=pct(acks, 0.5),
        ack_p99_ms=pct(acks, 0.99),
        delivery_p50_ms=summary(lat)["p50_ms"],
        delivery_p99_ms=summary(lat)["p99_ms"],
        duplicates=sum(c.duplicates for c in clients),
        delivered=delivered,
        expected=expected,
        pinned=all(node.server.pinned for node in nodes),
    )
    return row, {f"cluster_scale throughput {n} node(s) send→delivery": lat}


async def fanout_phase(
    n: int,
    nodes: list[Node],
    world: World,
    chat: int,
    by_user: dict[int, StreamClient],
    messages: int,
    rate: float,
    pids: tuple[int, int],
    http: httpx.AsyncClient,
) -> tuple[dict[str, Any], dict[str, list[float]]]:
    members = world.chats[chat]
    clients = [by_user[u] for u in members]
    for c in clients:
        c.expect(messages)
    headers = {"Authorization": f"Bearer {world.tokens[world.sender]}"}
    sent: dict[int, float] = {}
    acks: list[float] = []
    window = await begin(nodes, pids, http)
    start = trio.current_time()
    for i in range(messages):
        mark = FAN_MARK + i
        sent[mark] = time.perf_counter()
        r = await http.post(
            f"{nodes[0].server.api_url}/api/chats/{chat}/messages",
            headers=headers,
            json={"content": f"bench#{mark}# " + "x" * 100},
        )
        r.raise_for_status()
        acks.append((time.perf_counter() - sent[mark]) * 1000)
        nodes[0].sends += 1
        await trio.sleep_until(start + (i + 1) / rate)  # on schedule, not after each answer
    with trio.move_on_after(CATCH_UP):
        for c in clients:
            await c.done.wait()
    delivered = sum(len(c.arrivals) for c in clients)
    row: dict[str, Any] = {
        "scenario": "cluster_scale",
        "phase": "fanout",
        "nodes": n,
        "chats": 1,
        "members": len(members),
        "messages": messages,
        **await finish(window, nodes, pids, http, messages, delivered),
    }
    lat = [(t - sent[m]) * 1000 for c in clients for m, t in c.arrivals.items()]
    row.update(
        ack_p50_ms=pct(acks, 0.5),
        ack_p99_ms=pct(acks, 0.99),
        delivery_p50_ms=summary(lat)["p50_ms"],
        delivery_p99_ms=summary(lat)["p99_ms"],
        duplicates=sum(c.duplicates for c in clients),
        delivered=delivered,
        expected=messages * len(members),
        pinned=all(node.server.pinned for node in nodes),
    )
    return row, {f"cluster_scale fanout N={len(members)} {n} node(s)": lat}
