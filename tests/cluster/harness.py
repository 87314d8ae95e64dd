"""``ClusterHarness``: k Fechatter nodes in ONE trio process, sharing one PostgreSQL database
and one NATS server (docs/cluster.md §8, Phase 0).

Each node is a full ``fechatter.app.serve`` call with its own ports (0: the kernel picks),
node id, actor system, metrics registry and Quart app; running several side by side in one
process is itself the test that nothing is a process global. Nodes stop gracefully
(``stop``: the shutdown event, then wait for ``serve`` to return) in any order.
This module must never be imported by the ``fechatter`` package.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from fechatter.app import ServerInfo, serve
from fechatter.cluster.node import ClusterNode
from fechatter.config import Settings
from tests.conftest import make_settings

STOP_CEILING = 15.0  # seconds for a node's graceful stop (shutdown_grace 2 s + release)


@dataclass
class RunningNode:
    """One node of the harness: its ``ServerInfo`` and how to stop it."""

    name: str
    info: ServerInfo
    shutdown: trio.Event
    stopped: trio.Event = field(default_factory=trio.Event)

    @property
    def api_url(self) -> str:
        return self.info.api_url

    @property
    def cluster(self) -> ClusterNode:
        assert self.info.cluster is not None, "started without a NATS URL"
        return self.info.cluster

    @property
    def node_id(self) -> str:
        """The current id (it changes if the node's row expired and it registered again)."""
        return self.cluster.node_id

    async def stop(self) -> None:
        """Graceful stop: listeners close, the row is released; returns once ``serve`` did."""
        self.shutdown.set()
        with trio.fail_after(STOP_CEILING):
            await self.stopped.wait()


class ClusterHarness:
    """Starts nodes in ``nursery`` against ``database_url`` and ``nats_url``."""

    def __init__(
        self, nursery: trio.Nursery, tmp_path: Path, database_url: str, nats_url: str
    ) -> None:
        self._nursery = nursery
        self._tmp_path = tmp_path
        self.database_url = database_url
        self.nats_url = nats_url
        self.nodes: list[RunningNode] = []
        self._names = itertools.count(1)

    async def start_node(self, base: Settings | None = None, **overrides: Any) -> RunningNode:
        """Start one more node (``Settings`` overrides allowed); returns once it serves.

        ``base``: start from these settings (the suites' ``settings_factory``) instead of
        ``make_settings``; the harness still sets the NATS URL and the node id.
        """
        name = f"n{next(self._names)}"
        cluster = {"nats_url": self.nats_url, "node_id": name}
        if base is None:
            settings = make_settings(self._tmp_path, self.database_url, **cluster, **overrides)
        else:
            settings = base.model_copy(update={**cluster, **overrides})
        shutdown = trio.Event()
        stopped = trio.Event()

        async def run(*, task_status: trio.TaskStatus[ServerInfo]) -> None:
            try:
                await serve(settings, shutdown, task_status=task_status)
            finally:
                stopped.set()

        info: ServerInfo = await self._nursery.start(run)
        node = RunningNode(name, info, shutdown, stopped)
        self.nodes.append(node)
        return node

    async def aclose(self) -> None:
        """Stop every node still running, all at once."""
        async with trio.open_nursery() as nursery:
            for node in self.nodes:
                if not node.stopped.is_set():
                    nursery.start_soon(node.stop)


@asynccontextmanager
async def open_cluster_harness(
    nursery: trio.Nursery, tmp_path: Path, database_url: str, nats_url: str, k: int = 0
) -> AsyncIterator[ClusterHarness]:
    """A harness with ``k`` nodes started (sequentially, so their ids are ``n1``…``nk``
    plus boot epochs); every node still running stops gracefully on exit."""
    harness = ClusterHarness(nursery, tmp_path, database_url, nats_url)
    try:
        for _ in range(k):
            await harness.start_node()
        yield harness
    finally:
        await harness.aclose()


async def wait_nodes(node: RunningNode, expected: set[str]) -> None:
    """Wait until ``node``'s cached live nodes are exactly ``expected`` (bound it with
    ``trio.fail_after``): woken by each heartbeat refresh, never polled on a timer."""
    while set(node.cluster.nodes) != expected:
        await node.cluster.wait_changed()
