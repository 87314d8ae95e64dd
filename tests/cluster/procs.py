"""Cluster nodes as real ``fechatter serve`` subprocesses, for tests that must kill, freeze or
stop one (docs/cluster.md §10, issue 13): ``open_node_procs`` starts N nodes against one
PostgreSQL database and one NATS server, each on ports of its own, with a shared
``FECHATTER_JWT_SECRET`` and the test's own ``nats_prefix``, and waits until every one
answers ``/ready``. A ``NodeProc`` keeps its node's stderr (text log lines) and can be sent
SIGKILL, SIGSTOP, SIGCONT or SIGTERM. Whatever is still running on the way out is killed
(a stopped node is continued first, so it can die). This module must never be imported by
the ``fechatter`` package.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import trio

from tests.conftest import TEST_SECRET
from tests.test_lifecycle import CHECKOUT

START_CEILING = 60.0  # N Python processes importing the app and registering, on 2 shared cores
POLL = 0.05  # seconds between checks of a real condition another process owns (/ready)


# The node's own start-up lines (fechatter/app.py), text or JSON log format alike.
_API_LINE = re.compile(rb"fechatter API on http://127\.0\.0\.1:(\d+)")
_STREAMS_LINE = re.compile(rb"fechatter realtime streams on (?:http://127\.0\.0\.1:(\d+)|none)")


class NodeProc:
    """One ``fechatter serve`` node process: its URLs, its log so far, its signals."""

    def __init__(self, name: str, process: trio.Process, api_port: int, rt_port: int) -> None:
        self.name = name
        self.process = process
        self.api = f"http://127.0.0.1:{api_port}"
        self.realtime = f"http://127.0.0.1:{rt_port}"
        self.node_id = ""  # the full id (<name>.<boot>), read from /api/sse/health at start
        self.log = bytearray()
        self._more = trio.Event()
        self.eof = trio.Event()

    async def read_stderr(self) -> None:
        """Keep the node's stderr in ``log`` until it closes (the process is gone)."""
        assert self.process.stderr is not None
        async with self.process.stderr:
            while chunk := await self.process.stderr.receive_some(65536):
                self.log += chunk
                self._more.set()
                self._more = trio.Event()
        self.eof.set()
        self._more.set()

    async def wait_log(self, pattern: re.Pattern[bytes]) -> re.Match[bytes]:
        """The first match of ``pattern`` in the log, once there is one (bound it with
        ``trio.fail_after``); AssertionError if the process ends without one."""
        while (found := pattern.search(self.log)) is None:
            assert not self.eof.is_set(), self.text()
            await self._more.wait()
        return found

    def text(self) -> str:
        return self.log.decode(errors="replace")

    @property
    def running(self) -> bool:
        return self.process.returncode is None

    def kill(self) -> None:
        """SIGKILL: the process dies at once, nothing released (its row expires by itself)."""
        self.process.send_signal(signal.SIGKILL)

    def freeze(self) -> None:
        """SIGSTOP: the process stops running (sockets stay open), like a long pause."""
        self.process.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        """SIGCONT after ``freeze``."""
        self.process.send_signal(signal.SIGCONT)

    def terminate(self) -> None:
        """SIGTERM: the graceful stop (drain, release, close streams)."""
        self.process.send_signal(signal.SIGTERM)

    async def wait(self) -> int:
        """Wait for the process to exit; returns its code (negative: the signal)."""
        return await self.process.wait()

    async def health(self) -> dict[str, Any] | None:
        """``/api/sse/health`` (node id, live nodes, active chats); None if it does not answer."""
        try:
            async with httpx.AsyncClient(base_url=self.api, timeout=5) as client:
                r = await client.get("/api/sse/health")
        except httpx.TransportError:
            return None
        if r.status_code != 200:
            return None
        body: dict[str, Any] = r.json()
        return body

    async def learn_ports(self) -> None:
        """Read the ports the node bound from its own log (started with ``--port 0
        --realtime-port 0``) into ``api``/``realtime``; bound it with ``trio.fail_after``.

        Ports picked beforehand (``free_port``: bind 0, close, pass the number) can be taken by
        another process before a slow-starting node binds them; CI saw the zipapp node's
        ``/ready`` answered by another worker's server on "its" port. A port the kernel gave
        the node itself is the node's."""
        api = await self.wait_log(_API_LINE)
        self.api = f"http://127.0.0.1:{int(api[1])}"
        streams = await self.wait_log(_STREAMS_LINE)
        if streams[1] is not None:  # role api: no stream listener
            self.realtime = f"http://127.0.0.1:{int(streams[1])}"

    async def wait_ready(self) -> None:
        """Poll ``/ready`` until it answers 200 (bound it with ``trio.fail_after``); then read
        the node id. AssertionError with the log if the process exits first."""
        async with httpx.AsyncClient(base_url=self.api, timeout=5) as client:
            while True:
                assert self.running, self.text()
                try:
                    if (await client.get("/ready")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                await trio.sleep(POLL)
        body = await self.health()
        assert body is not None, self.text()
        self.node_id = str(body["node_id"])

    async def wait_health(self, check: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        """Poll ``/api/sse/health`` until ``check(body)`` holds; returns that body. Bound it
        with ``trio.fail_after``."""
        while True:
            body = await self.health()
            if body is not None and check(body):
                return body
            await trio.sleep(POLL)

    async def wait_live_nodes(self, expected: set[str]) -> None:
        """Wait until this node's live nodes are exactly ``expected`` (full ids)."""
        await self.wait_health(lambda body: set(body["nodes"]) == expected)


@asynccontextmanager
async def open_node_procs(
    nursery: trio.Nursery,
    tmp_path: Path,
    database_url: str,
    nats_url: str,
    prefix: str,
    n: int,
    env: dict[str, str] | None = None,
) -> AsyncIterator[list[NodeProc]]:
    """Start ``n`` nodes ``p1``…``pn`` (role all) at once and wait until each is ready and
    sees all ``n`` live; ``env`` adds ``FECHATTER_*`` settings. Every node still running on
    exit is continued and killed, and reaped."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("FECHATTER_")}
    base.update(
        PYTHONPATH=CHECKOUT,
        FECHATTER_JWT_SECRET=TEST_SECRET,
        FECHATTER_NATS_PREFIX=prefix,
        FECHATTER_ARGON2_MEMORY_COST="8",
        FECHATTER_ARGON2_TIME_COST="1",
        FECHATTER_ARGON2_PARALLELISM="1",
        FECHATTER_SHUTDOWN_GRACE="2",
        **(env or {}),
    )
    nodes: list[NodeProc] = []
    try:
        for i in range(1, n + 1):
            command = [
                sys.executable, "-m", "fechatter", "serve",
                "--database-url", database_url, "--nats-url", nats_url,
                "--node-id", f"p{i}", "--port", "0",
                "--realtime-port", "0", "--log-format", "text",
            ]  # fmt: skip
            process = await trio.lowlevel.open_process(
                command, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE, env=base, cwd=tmp_path
            )
            node = NodeProc(f"p{i}", process, 0, 0)  # learn_ports: the ones it bound
            nodes.append(node)
            nursery.start_soon(node.read_stderr)
        with trio.fail_after(START_CEILING):
            async with trio.open_nursery() as starting:
                for node in nodes:
                    starting.start_soon(_start, node)
            ids = {node.node_id for node in nodes}
            for node in nodes:
                await node.wait_live_nodes(ids)
        yield nodes
    finally:
        with trio.CancelScope(shield=True):
            for node in nodes:
                if node.running:
                    node.thaw()
                    node.kill()
                await node.wait()


async def _start(node: NodeProc) -> None:
    await node.learn_ports()
    await node.wait_ready()
