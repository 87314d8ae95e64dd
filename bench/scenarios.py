"""The five scenarios. Each returns result rows (dicts) and, for plotting, latency samples.

Every row carries ``delivered`` and ``expected``: a run where they differ is a failed run,
whatever its timings say.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import trio

from bench.harness import (
    Server,
    World,
    cpu_seconds,
    postgres_server_pid,
    prepare,
    run_server,
    tree_cpu_seconds,
)
from bench.loadgen import StreamClient, WsSender, drop, run_stream

CATCH_UP = 60.0


async def profile(server: Server, seconds: float, label: str) -> None:
    """With ``BENCH_PYSPY=<folder>``, record a py-spy profile of the server for the window."""
    import os

    folder = os.environ.get("BENCH_PYSPY")
    if not folder:
        return
    import shutil
    import sys

    out = f"{folder}/{label}.pyspy.txt"
    # py-spy is a tool, not a dependency: on PATH or next to this interpreter (a venv).
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    process = await trio.lowlevel.open_process(
        [
            spy,
            "record",
            "-p",
            str(server.pid),
            "-o",
            out,
            "--format",
            "raw",
            "-d",
            str(max(1, int(seconds))),
            "-r",
            "250",
        ],
    )
    await process.wait()


async def settle(server: Server, *, idle_share: float = 0.05, limit: float = 120.0) -> None:
    """Wait until connect-time work (presence flushes) is over: the server's CPU use over a
    quarter second drops under ``idle_share`` of a core. Measuring starts only then."""
    with trio.move_on_after(limit):
        before = server.cpu()
        while True:
            await trio.sleep(0.25)
            now = server.cpu()
            if now - before < 0.25 * idle_share + 1 / 100:  # one clock tick of slack
                return
            before = now


@dataclass
class Outcome:
    rows: list[dict[str, Any]] = field(default_factory=list)
    latencies: dict[str, list[float]] = field(default_factory=dict)  # label -> ms samples


def pct(samples: list[float], q: float) -> float:
    if not samples:
        return float("nan")
    ordered = sorted(samples)
    return round(ordered[min(len(ordered) - 1, max(0, int(len(ordered) * q) - 1))], 2)


def summary(samples: list[float]) -> dict[str, float]:
    return {
        "p50_ms": round(statistics.median(samples), 2) if samples else float("nan"),
        "p95_ms": pct(samples, 0.95),
        "p99_ms": pct(samples, 0.99),
        "max_ms": round(max(samples), 2) if samples else float("nan"),
    }


def my_cpu() -> float:
    import os

    return cpu_seconds(os.getpid())


async def open_streams(
    nursery: trio.Nursery, server: Server, world: World, users: list[int]
) -> list[StreamClient]:
    """One stream per user, alternating SSE and WebSocket; returns once all are ready."""
    clients = [
        StreamClient("sse" if i % 2 == 0 else "ws", world.tokens[uid])
        for i, uid in enumerate(users)
    ]
    for client in clients:
        nursery.start_soon(run_stream, client, server.realtime_host, server.realtime_port)
    with trio.fail_after(120):
        for client in clients:
            await client.ready.wait()
    return clients


async def connections(sizes: list[int], database_url: str | None) -> Outcome:
    out = Outcome()
    for n in sizes:
        async with run_server(database_url) as (server, url):
            world = await prepare(url, n, [])
            async with trio.open_nursery() as nursery:
                base = server.rss()
                cpu0, gen0, t0 = server.cpu(), my_cpu(), time.perf_counter()
                clients = await open_streams(nursery, server, world, list(world.tokens)[1:])
                connect = time.perf_counter() - t0
                cpu1, gen1 = server.cpu(), my_cpu()
                await settle(server)
                rss = server.rss()
                ready = sum(c.ready.is_set() for c in clients)
                nursery.cancel_scope.cancel()
        out.rows.append(
            {
                "scenario": "connections",
                "streams": n,
                "connect_s": round(connect, 2),
                "connects_per_s": round(n / connect),
                "rss_idle_base_mib": round(base, 1),
                "rss_mib": round(rss, 1),
                "rss_per_1000_mib": round((rss - base) / n * 1000, 2),
                "server_cpu_ms_per_connect": round((cpu1 - cpu0) / n * 1000, 3),
                "generator_cpu_s": round(gen1 - gen0, 2),
                "delivered": ready,
                "expected": n,
                "pinned": server.pinned,
            }
        )
    return out


# Deliveries per second the load generator can parse on its core without queueing (it spends
# ~35-47 µs per delivery, see bench/README.md); the sending pace of large fan-outs is capped so
# that latency measures the server, not the generator's backlog.
GENERATOR_BUDGET = 10_000


async def post_marked(
    api_url: str, chat_id: int, headers: dict[str, str], messages: int, rate: float
) -> dict[int, float]:
    """Post ``messages`` messages carrying the ``bench#<i>#`` marker at ``rate`` per second
    over HTTP; return when each send started (``perf_counter`` seconds, by marker)."""
    sent: dict[int, float] = {}
    async with httpx.AsyncClient(base_url=api_url, timeout=30) as http:
        for i in range(messages):
            sent[i] = time.perf_counter()
            r = await http.post(
                f"/api/chats/{chat_id}/messages",
                headers=headers,
                json={"content": f"bench#{i}# " + "x" * 100},
            )
            r.raise_for_status()
            await trio.sleep(1 / rate)
    return sent


async def caught_up(clients: list[StreamClient]) -> None:
    """Wait until every client got what it expects, at most ``CATCH_UP`` seconds."""
    with trio.move_on_after(CATCH_UP):
        for c in clients:
            await c.done.wait()


async def fanout(sizes: list[int], messages: int, rate: float, database_url: str | None) -> Outcome:
    out = Outcome()
    for n in sizes:
        rate_n = min(rate, GENERATOR_BUDGET / n)
        async with run_server(database_url) as (server, url):
            world = await prepare(url, n, [n])
            chat_id = next(iter(world.chats))
            async with trio.open_nursery() as nursery:
                clients = await open_streams(nursery, server, world, world.chats[chat_id])
                await settle(server)
                for c in clients:
                    c.expect(messages)
                headers = {"Authorization": f"Bearer {world.tokens[world.sender]}"}
                cpu0, gen0 = server.cpu(), my_cpu()
                nursery.start_soon(profile, server, messages / rate_n, f"fanout-{n}")
                sent = await post_marked(server.api_url, chat_id, headers, messages, rate_n)
                await caught_up(clients)
                cpu, gen = server.cpu() - cpu0, my_cpu() - gen0
                rss = server.rss()
                nursery.cancel_scope.cancel()
        samples = [(t - sent[i]) * 1000 for c in clients for i, t in c.arrivals.items()]
        delivered = sum(len(c.arrivals) for c in clients)
        out.latencies[f"fanout N={n}"] = samples
        out.rows.append(
            {
                "scenario": "fanout",
                "members": n,
                "messages": messages,
                "rate_per_s": rate_n,
                **summary(samples),
                "server_cpu_us_per_delivery": round(cpu / max(1, delivered) * 1e6, 2),
                "generator_cpu_us_per_delivery": round(gen / max(1, delivered) * 1e6, 2),
                "rss_mib": round(rss, 1),
                "duplicates": sum(c.duplicates for c in clients),
                "delivered": delivered,
                "expected": messages * n,
                "pinned": server.pinned,
            }
        )
    return out


async def throughput(
    chats: int, members: int, senders: int, seconds: float, database_url: str | None
) -> Outcome:
    out = Outcome()
    async with run_server(database_url) as (server, url):
        world = await prepare(url, chats * members, [members] * chats)
        chat_ids = list(world.chats)
        async with trio.open_nursery() as nursery:
            everyone = [uid for cid in chat_ids for uid in world.chats[cid]]
            clients = await open_streams(nursery, server, world, everyone)
            by_chat = {
                cid: clients[k * members : (k + 1) * members] for k, cid in enumerate(chat_ids)
            }
            sender_conns = []
            for k in range(senders):
                conn = WsSender(world.tokens[world.chats[chat_ids[k]][0]])
                await nursery.start(conn.run, server.realtime_host, server.realtime_port)
                sender_conns.append(conn)
            await settle(server)
            sent_at: dict[int, float] = {}
            acks: list[float] = []
            counts = [0] * senders

            async def loop(k: int, conn: WsSender, deadline: float) -> None:
                chat = chat_ids[k]
                while time.perf_counter() < deadline:
                    n = k * 10_000_000 + counts[k]
                    sent_at[n] = time.perf_counter()
                    acks.append(await conn.send(chat, f"t{n}", f"bench#{n}# hello") * 1000)
                    counts[k] += 1

            pg_pid = postgres_server_pid(database_url)
            pg0 = tree_cpu_seconds(pg_pid) if pg_pid else 0.0
            cpu0, gen0, t0 = server.cpu(), my_cpu(), time.perf_counter()
            async with trio.open_nursery() as load:
                load.start_soon(profile, server, seconds - 1, "throughput")
                for k, conn in enumerate(sender_conns):
                    load.start_soon(loop, k, conn, t0 + seconds)
            elapsed = time.perf_counter() - t0
            for k in range(senders):
                for c in by_chat[chat_ids[k]]:
                    c.expect(counts[k])
            with trio.move_on_after(CATCH_UP):
                for k in range(senders):
                    for c in by_chat[chat_ids[k]]:
                        await c.done.wait()
            cpu, gen = server.cpu() - cpu0, my_cpu() - gen0
            pg_cpu = tree_cpu_seconds(pg_pid) - pg0 if pg_pid else None
            nursery.cancel_scope.cancel()
    delivered = sum(len(c.arrivals) for c in clients)
    samples = [(t - sent_at[n]) * 1000 for c in clients for n, t in c.arrivals.items()]
    out.latencies["throughput send→delivery"] = samples
    out.latencies["throughput send→ack"] = acks
    total = sum(counts)
    out.rows.append(
        {
            "scenario": "throughput",
            "chats": chats,
            "members": members,
            "online": len(clients),
            "senders": senders,
            "seconds": round(elapsed, 1),
            "messages_per_s": round(total / elapsed),
            "deliveries_per_s": round(delivered / elapsed),
            "ack_p99_ms": pct(acks, 0.99),
            "delivery_p99_ms": pct(samples, 0.99),
            "server_cpu_us_per_message": round(cpu / max(1, total) * 1e6, 1),
            # A local PostgreSQL server's own CPU (postmaster and backends), same window.
            "postgres_cpu_us_per_message": (
                None if pg_cpu is None else round(pg_cpu / max(1, total) * 1e6, 1)
            ),
            "generator_cpu_s": round(gen, 2),
            "duplicates": sum(c.duplicates for c in clients),
            "delivered": delivered,
            "expected": total * members,
            "pinned": server.pinned,
        }
    )
    return out


async def reconnect_storm(k: int, messages: int, database_url: str | None) -> Outcome:
    out = Outcome()
    async with run_server(database_url) as (server, url):
        world = await prepare(url, k, [k])
        chat_id = next(iter(world.chats))
        async with trio.open_nursery() as nursery:
            clients = await open_streams(nursery, server, world, world.chats[chat_id])
            await settle(server)
            async with trio.open_nursery() as dropping:
                for c in clients:
                    dropping.start_soon(drop, c)
            headers = {"Authorization": f"Bearer {world.tokens[world.sender]}"}
            async with httpx.AsyncClient(base_url=server.api_url, timeout=30) as http:
                for i in range(messages):
                    r = await http.post(
                        f"/api/chats/{chat_id}/messages",
                        headers=headers,
                        json={"content": f"bench#{i}# missed"},
                    )
                    r.raise_for_status()
            for c in clients:
                c.expect(messages)
                c.reset()
            cpu0, t0 = server.cpu(), time.perf_counter()
            for c in clients:
                nursery.start_soon(
                    partial(run_stream, c, server.realtime_host, server.realtime_port, resume=True)
                )
            with trio.move_on_after(CATCH_UP):
                for c in clients:
                    await c.done.wait()
            caught_up = time.perf_counter() - t0
            cpu = server.cpu() - cpu0
            nursery.cancel_scope.cancel()
    delivered = sum(len(c.arrivals) for c in clients)
    out.rows.append(
        {
            "scenario": "reconnect_storm",
            "streams": k,
            "missed_messages": messages,
            "all_caught_up_s": round(caught_up, 2),
            "server_cpu_ms_per_resume": round(cpu / k * 1000, 3),
            "duplicates": sum(c.duplicates for c in clients),
            "delivered": delivered,
            "expected": k * messages,
            "pinned": server.pinned,
        }
    )
    return out


@dataclass
class Toggles:
    """What one reactor did: requests that changed its reaction, and refused requests."""

    changes: int = 0
    errors: int = 0


async def toggle(
    http: httpx.AsyncClient,
    path: str,
    token: str,
    delay: float,
    count: int,
    interval: float,
    tally: Toggles,
) -> None:
    """PUT/DELETE the reaction at ``path`` ``count`` times, at ``delay + k * interval``
    seconds from now (k = 0, 1, …; on schedule, not after each answer, and no wait after the
    last, so the run lasts as long as its load); a refused request does not flip the state."""
    headers = {"Authorization": f"Bearer {token}"}
    start = trio.current_time() + delay
    on = False
    for k in range(count):
        await trio.sleep_until(start + k * interval)
        response = await http.request("DELETE" if on else "PUT", path, headers=headers)
        if response.status_code == 204:
            tally.changes += 1
            on = not on
        else:
            tally.errors += 1


# What a reaction event looks like on each transport, to count it without decoding JSON.
REACTION_PATTERN = {"sse": b"event: reaction.", "ws": b'"event":"reaction.'}


async def reaction_storm(
    members: int,
    streams: list[int],
    reactors: int,
    rate: float,
    seconds: float,
    database_url: str | None,
) -> Outcome:
    """One PublicChannel of ``members``; ``reactors`` of them toggle a 👍 on one message
    (PUT, DELETE, PUT, …: every request changes something, so each is one event to every
    member) at ``rate`` requests/s in all for ``seconds``, while ``streams`` members are online
    and count the reaction events they get. Reports deliveries/s and the server's CPU."""
    out = Outcome()
    for m in streams:
        rate_m = min(rate, GENERATOR_BUDGET / m)
        async with run_server(database_url) as (server, url):
            world = await prepare(url, members, [members])
            chat_id = next(iter(world.chats))
            everyone = world.chats[chat_id]
            async with trio.open_nursery() as nursery:
                clients = await open_streams(nursery, server, world, everyone[:m])
                async with httpx.AsyncClient(base_url=server.api_url, timeout=30) as http:
                    r = await http.post(
                        f"/api/chats/{chat_id}/messages",
                        headers={"Authorization": f"Bearer {world.tokens[world.sender]}"},
                        json={"content": "react to me"},
                    )
                    r.raise_for_status()
                    path = f"/api/chats/{chat_id}/messages/{r.json()['id']}/reactions/%F0%9F%91%8D"
                    await settle(server)
                    per_reactor = max(1, round(rate_m * seconds / reactors))
                    interval = reactors / rate_m
                    tallies = [Toggles() for _ in range(reactors)]
                    for c in clients:  # count from the first event on
                        c.count_pattern = REACTION_PATTERN[c.transport]
                    cpu0, gen0, t0 = server.cpu(), my_cpu(), time.perf_counter()
                    nursery.start_soon(profile, server, seconds, f"reaction_storm-{m}")
                    async with trio.open_nursery() as load:
                        for k, tally in enumerate(tallies):
                            token = world.tokens[everyone[k]]
                            load.start_soon(
                                toggle, http, path, token, k / rate_m, per_reactor, interval, tally
                            )
                events = sum(t.changes for t in tallies)
                for c in clients:
                    c.expect_count(REACTION_PATTERN[c.transport], events)
                with trio.move_on_after(CATCH_UP):
                    for c in clients:
                        await c.done.wait()
                elapsed = time.perf_counter() - t0
                cpu, gen = server.cpu() - cpu0, my_cpu() - gen0
                nursery.cancel_scope.cancel()
        delivered = sum(c.counted for c in clients)
        out.rows.append(
            {
                "scenario": "reaction_storm",
                "members": members,
                "streams": m,
                "reactors": reactors,
                "rate_per_s": round(rate_m, 1),
                "reactions": events,
                "request_errors": sum(t.errors for t in tallies),
                "seconds": round(elapsed, 1),
                "reactions_per_s": round(events / elapsed, 1),
                "deliveries_per_s": round(delivered / elapsed),
                # Server process CPU time / wall time over the window: the share of one core.
                "server_cpu_share": round(cpu / elapsed, 3),
                "server_cpu_us_per_reaction": round(cpu / max(1, events) * 1e6, 1),
                "server_cpu_us_per_delivery": round(cpu / max(1, delivered) * 1e6, 2),
                "generator_cpu_s": round(gen, 2),
                "delivered": delivered,
                # Every request should have changed the reaction: a refused one is a failed run.
                "expected": reactors * per_reactor * m,
                "pinned": server.pinned,
            }
        )
    return out
