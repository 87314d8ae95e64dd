"""Fan-out cost of the realtime path: server CPU per delivered event, RSS per 1000 idle streams.

    python -m bench.fanout [--streams 1000 5000] [--messages 50] [--rate 20] [--transport sse]

For each stream count N it:
1. prepares a SQLite database directly through the storage API (N users in one workspace, one
   PublicChannel with all of them) — set-up is not what is measured;
2. starts ``fechatter serve`` as a subprocess pinned to core 0 (the generator takes core 1);
3. opens N streams (SSE, or WebSocket with ``--transport ws``) from one trio process with raw
   sockets, and reads the server's RSS before and after (idle cost per stream);
4. posts M messages at ``--rate``/s through the HTTP API and waits until every stream got every
   message; server CPU (utime+stime from /proc) over that window divided by M*N deliveries is
   the CPU per delivered event. The HTTP request handling of the M sends is included in that
   window, which makes the figure an upper bound; with N ≥ 1000 it is a small share.

Latency (send → parsed at each receiver) is reported as p50/p99/max. Traffic stays on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import trio

from fechatter.auth import Authenticator
from fechatter.models import ChatType, Role
from fechatter.storage.sqlite import open_sqlite_storage

SECRET = "bench-secret-" + "b" * 40
CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass
class Result:
    streams: int
    transport: str
    connect_seconds: float
    rss_idle_base_mib: float
    rss_streams_mib: float
    rss_per_1000_mib: float
    messages: int
    delivered: int
    expected: int
    cpu_us_per_delivery: float
    latency_ms_p50: float
    latency_ms_p99: float
    latency_ms_max: float


def proc_cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


async def prepare(db: Path, users: int) -> tuple[list[str], int]:
    """Users, workspace, one channel with everyone; returns access tokens and the chat id."""
    auth = Authenticator(
        SECRET,
        access_ttl=86400,
        refresh_ttl=86400,
        time_cost=1,
        memory_cost=8,
        parallelism=1,
        hash_threads=1,
    )
    async with open_sqlite_storage(str(db)) as storage:
        ids = []
        for i in range(users + 1):
            user, _ = await storage.create_user(f"u{i}", f"u{i}@bench.example", "x", None)
            ids.append(user.id)
        ws = await storage.create_workspace("bench", None, ids[0])
        for uid in ids[1:]:
            await storage.add_workspace_member(ws.id, uid, Role.MEMBER)
        chat = await storage.create_chat(ws.id, ChatType.PUBLIC_CHANNEL, "all", None, ids[0], ids)
    return [auth.issue_access_token(uid) for uid in ids], chat.id


class Receiver:
    """One stream, parsing only what it must: the marker of each message and its arrival."""

    def __init__(self, transport: str, expected: int) -> None:
        self.transport = transport
        self.expected = expected
        self.arrivals: dict[int, float] = {}
        self.ready = trio.Event()
        self.done = trio.Event()
        self.tail = b""

    def feed(self, data: bytes, now: float) -> None:
        text = self.tail + data
        for match in MARK.finditer(text):
            self.arrivals.setdefault(int(match.group(1)), now)
        self.tail = text[-64:]
        if len(self.arrivals) >= self.expected:
            self.done.set()
        if not self.ready.is_set() and b"ready" in text:
            self.ready.set()


MARK = re.compile(rb"bench#(\d+)#")


async def run_stream(
    host: str, port: int, token: str, receiver: Receiver, stop: trio.Event
) -> None:
    stream = await trio.open_tcp_stream(host, port)
    try:
        if receiver.transport == "sse":
            request = (
                f"GET /api/notifications/events HTTP/1.1\r\nHost: {host}\r\n"
                f"Authorization: Bearer {token}\r\n\r\n"
            )
        else:
            key = base64.b64encode(os.urandom(16)).decode()
            request = (
                f"GET /api/notifications/ws?access_token={token} HTTP/1.1\r\n"
                f"Host: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
            )
        await stream.send_all(request.encode())
        with trio.move_on_after(float("inf")) as scope:
            stop_scope = scope

            async def watch() -> None:
                await stop.wait()
                stop_scope.cancel()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(watch)
                while data := await stream.receive_some(65536):
                    receiver.feed(data, time.perf_counter())
                nursery.cancel_scope.cancel()
    finally:
        await stream.aclose()


async def measure(
    n: int, messages: int, rate: float, transport: str, profile: str | None = None
) -> Result:
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "bench.db"
        tokens, chat = await prepare(db, n)
        env = {
            **os.environ,
            "FECHATTER_JWT_SECRET": SECRET,
            "FECHATTER_SEND_RATE": "1000",
            "FECHATTER_SEND_BURST": "1000",
        }
        log_path = Path(tmp) / "server.log"
        log_file = log_path.open("w")
        server = await trio.lowlevel.open_process(
            [
                sys.executable,
                "-m",
                "fechatter",
                "serve",
                "--port",
                "0",
                "--realtime-port",
                "0",
                "--database-url",
                f"sqlite:///{db}",
            ],
            stderr=log_file,
            env=env,
            cwd=tmp,
        )
        try:
            if len(os.sched_getaffinity(0)) >= 2:
                os.sched_setaffinity(server.pid, {0})
                os.sched_setaffinity(0, {1})
            api = rt = None
            with trio.fail_after(60):
                while not (api and rt):
                    await trio.sleep(0.05)
                    text = log_path.read_text()
                    if m := re.search(r"fechatter API on (http://\S+)", text):
                        api = m.group(1)
                    if m := re.search(r"realtime streams on (http://\S+)", text):
                        rt = m.group(1)
                    assert server.poll() is None, text
            host, port = rt.removeprefix("http://").rsplit(":", 1)
            async with httpx.AsyncClient(base_url=api, timeout=30) as client:
                await client.get("/ready")
                rss_base = proc_rss_mib(server.pid)
                receivers = [Receiver(transport, messages) for _ in range(n)]
                stop = trio.Event()
                async with trio.open_nursery() as nursery:
                    start = time.perf_counter()
                    for token, receiver in zip(tokens[1:], receivers, strict=True):
                        nursery.start_soon(run_stream, host, int(port), token, receiver, stop)
                    for receiver in receivers:
                        await receiver.ready.wait()
                    connect_seconds = time.perf_counter() - start
                    await trio.sleep(1.0)  # let presence settle before measuring idle RSS
                    rss_streams = proc_rss_mib(server.pid)
                    headers = {"Authorization": f"Bearer {tokens[0]}"}
                    sent: dict[int, float] = {}
                    spy = None
                    if profile:
                        spy = await trio.lowlevel.open_process(
                            [
                                "py-spy",
                                "record",
                                "-p",
                                str(server.pid),
                                "-o",
                                profile,
                                "--format",
                                "raw",
                                "-d",
                                str(int(messages / rate) + 2),
                                "-r",
                                "500",
                            ],
                            stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL,
                        )
                        await trio.sleep(1.0)
                    cpu_before = proc_cpu_seconds(server.pid)
                    for i in range(messages):
                        sent[i] = time.perf_counter()
                        r = await client.post(
                            f"/api/chats/{chat}/messages",
                            headers=headers,
                            json={"content": f"bench#{i}# " + "x" * 100},
                        )
                        assert r.status_code == 201, r.text
                        await trio.sleep(1 / rate)
                    with trio.move_on_after(30):
                        for receiver in receivers:
                            await receiver.done.wait()
                    cpu = proc_cpu_seconds(server.pid) - cpu_before
                    stop.set()
                    if spy is not None:
                        await spy.wait()
        finally:
            server.terminate()
            with trio.move_on_after(30):
                await server.wait()
            log_file.close()
        latencies = [(t - sent[i]) * 1000 for r in receivers for i, t in r.arrivals.items()]
        latencies.sort()
        delivered = sum(len(r.arrivals) for r in receivers)
        return Result(
            streams=n,
            transport=transport,
            connect_seconds=round(connect_seconds, 2),
            rss_idle_base_mib=round(rss_base, 1),
            rss_streams_mib=round(rss_streams, 1),
            rss_per_1000_mib=round((rss_streams - rss_base) / n * 1000, 2),
            messages=messages,
            delivered=delivered,
            expected=messages * n,
            cpu_us_per_delivery=round(cpu / max(1, delivered) * 1e6, 2),
            latency_ms_p50=round(statistics.median(latencies), 2),
            latency_ms_p99=round(latencies[int(len(latencies) * 0.99) - 1], 2),
            latency_ms_max=round(latencies[-1], 2),
        )


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--streams", type=int, nargs="+", default=[1000, 5000])
    parser.add_argument("--messages", type=int, default=50)
    parser.add_argument("--rate", type=float, default=20.0)
    parser.add_argument("--transport", choices=["sse", "ws"], default="sse")
    parser.add_argument("--py-spy", metavar="FILE", help="record a py-spy profile of the sends")
    args = parser.parse_args()
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    for n in args.streams:
        result = await measure(n, args.messages, args.rate, args.transport, args.py_spy)
        print(json.dumps(result.__dict__))


if __name__ == "__main__":
    trio.run(main)
