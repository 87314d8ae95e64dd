"""A cluster node's membership at run time (docs/cluster.md §1, plan A1): the NATS connection,
the node's row in ``cluster_nodes``, its heartbeat, its self-fence and the cached list of live
nodes.

``open_cluster_node`` registers the node, runs the heartbeat (and its watchdog) in a nursery
of its own for the duration of the block, and releases the row on the way out (bounded and
shielded). Everything it knows for readers (``/api/sse/health``, ``/ready``) is a plain
attribute refreshed by the heartbeat: a request never queries the database for it.

A node here only announces itself and watches its own liveness (commands: ``router``;
events: ``wiring``). This module must never open a listener or import a transport.
"""

from __future__ import annotations

import logging
import secrets
import string
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass

import trio

from fechatter.bus import Bus, BusState
from fechatter.errors import Unavailable
from fechatter.ratelimit import RateLimiter, rate_share
from fechatter.storage.cluster import ClusterStore, NodeRole

log = logging.getLogger(__name__)

# docs/cluster.md §1: beat every second, a row lives 4 s past its last beat (three lost beats
# tolerated), and a node with no confirmed beat for 3 s (its monotonic clock, from the send
# time of the last confirmed beat) fences itself before anyone could take its chats. Was 5 s /
# 4 s; lowered in issue 13 so a killed node's chats move in under 5 s (measured 4.2-5.2 s at
# 5 s), affordable since the beat has its own reserved connection (no pool wait).
HEARTBEAT_INTERVAL = 1.0
NODE_TTL = 4.0
SELF_FENCE_AFTER = 3.0
# Graceful stop: the release of our row is one UPDATE; past this, the row expires by itself.
RELEASE_CEILING = 2.0
BOOT_ALPHABET = string.ascii_lowercase + string.digits
BOOT_CHARS = 6


def new_boot() -> str:
    """A fresh boot epoch: 6 base-36 characters from ``secrets`` (docs/cluster.md §1)."""
    return "".join(secrets.choice(BOOT_ALPHABET) for _ in range(BOOT_CHARS))


@dataclass(frozen=True, slots=True)
class NodeTiming:
    """The heartbeat's numbers, seconds (defaults: docs/cluster.md §1)."""

    interval: float = HEARTBEAT_INTERVAL
    ttl: float = NODE_TTL
    self_fence_after: float = SELF_FENCE_AFTER


class ClusterNode:
    """This process as a cluster member; build it with ``open_cluster_node``.

    Read-only for others: ``node_id`` (changes only when an expired node registers again),
    ``nodes`` (live node ids, cached, refreshed each beat), ``self_fenced``, ``bus``.
    """

    def __init__(
        self,
        store: ClusterStore,
        bus: Bus,
        role: NodeRole,
        make_id: Callable[[str], str],
        boot: str,
        timing: NodeTiming,
    ) -> None:
        self.store = store
        self.bus = bus
        self.role: NodeRole = role
        self._make_id = make_id
        self.timing = timing
        self.node_id = make_id(boot)
        self.nodes: tuple[str, ...] = (self.node_id,)
        self.self_fenced = False
        # Graceful leave (``leave``): no more beats, no self-fence, the row ended.
        self.leaving = False
        self.released = False
        self.beats = 0  # confirmed beats since start
        self._confirmed_sent = trio.current_time()  # send time of the last confirmed beat
        self._confirmed = trio.Event()  # set (and replaced) at each confirmed beat
        self._heartbeat = trio.CancelScope()
        self._failing = False  # a beat failed and nobody has been told it recovered
        self._changed = trio.Event()  # set (and replaced) when nodes / node_id / fence change
        # Called (synchronously, in order) the moment this node fences itself: the ChatRouter
        # retires its local actors there. A hook must not raise.
        self.on_fence: list[Callable[[], None]] = []

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def wait_changed(self) -> None:
        """Return at the next change of ``nodes``, ``node_id`` or ``self_fenced`` (a refresh
        that finds the same nodes counts too). Bound it with ``trio.fail_after``."""
        await self._changed.wait()

    @property
    def nats_ok(self) -> bool:
        """Whether the NATS connection is up now."""
        return self.bus.state is BusState.CONNECTED

    def not_ready(self) -> str | None:
        """Why this node must not take traffic (``/ready``), or None when it may."""
        if not self.nats_ok:
            return f"NATS is {self.bus.state.value}"
        if self.self_fenced:
            return "this node has fenced itself: its heartbeat is not confirmed"
        if self.leaving:
            return "this node is leaving the cluster"
        return None

    def halt_heartbeat(self) -> None:
        """Stop beating without releasing the row, as a hung node would (tests, operators'
        drills): the row expires after ``ttl`` and this node fences itself."""
        self._heartbeat.cancel()

    async def _register(self) -> None:
        await self.store.register_node(
            self.node_id, self.role, self.timing.ttl, nats_ok=self.nats_ok
        )
        self._confirm(trio.current_time())

    def _confirm(self, sent: float) -> None:
        self._confirmed_sent = sent
        self.beats += 1
        if self.self_fenced:
            log.warning("cluster node %s: heartbeat confirmed again, fence lifted", self.node_id)
            self.self_fenced = False
            self._notify()
        self._confirmed.set()
        self._confirmed = trio.Event()

    async def leave(self) -> bool:
        """Graceful leave (docs/cluster.md §3 "Handover"): stop beating (and never fence
        from here on: the silence is deliberate), then end this node's row at once, so its
        leases are takeable now rather than after the TTL. Bounded by ``RELEASE_CEILING``
        seconds and shielded; returns whether the row was ended here (False: it had expired
        already, or the release failed and is logged — the row then expires by itself)."""
        self.leaving = True
        self._heartbeat.cancel()
        return await self._release()

    async def _release(self) -> bool:
        if self.released:  # answered once; a failed release is tried again on exit
            return False
        ended = False
        with trio.move_on_after(RELEASE_CEILING, shield=True) as scope:
            try:
                ended = await self.store.release_node(self.node_id)
                self.released = True
            except Unavailable as exc:
                log.warning("cluster node %s: release failed: %s", self.node_id, exc)
        if scope.cancelled_caught:
            log.warning("cluster node %s: release took over %ss", self.node_id, RELEASE_CEILING)
        return ended

    def _fence(self, why: str) -> None:
        if self.leaving:  # beats stopped on purpose; the row is being released
            return
        if not self.self_fenced:
            self.self_fenced = True
            log.warning("cluster node %s fenced itself: %s", self.node_id, why)
            for hook in list(self.on_fence):
                hook()
            self._notify()

    async def _beat(self) -> None:
        sent = trio.current_time()
        try:
            alive = await self.store.heartbeat(self.node_id, self.timing.ttl, nats_ok=self.nats_ok)
            if alive:
                self._confirm(sent)
            else:
                # Our row expired (or was ended): its id is never revived (its leases may
                # have moved); come back under a new boot epoch.
                self._fence("its row in cluster_nodes expired")
                old = self.node_id
                self.node_id = self._make_id(new_boot())
                # The old id is dead now: out of the live list at once, so the router drops
                # owners cached under it instead of forwarding to the inbox being left.
                self.nodes = tuple(n for n in self.nodes if n != old)
                log.warning("cluster node %s registers again as %s", old, self.node_id)
                await self._register()
            self.nodes = tuple(n.node_id for n in await self.store.live_nodes())
            self._notify()
        except Unavailable as exc:
            if not self._failing:
                log.warning("cluster node %s: heartbeat failed: %s", self.node_id, exc)
            self._failing = True
            return
        if self._failing:
            log.info("cluster node %s: heartbeat answers again", self.node_id)
            self._failing = False

    async def serve_heartbeat(self, *, task_status: trio.TaskStatus[None]) -> None:
        """Beat every ``interval`` until cancelled (or ``halt_heartbeat``); never returns
        otherwise. A beat that takes longer delays the next (one in flight at a time)."""
        with self._heartbeat:
            task_status.started()
            while True:
                start = trio.current_time()
                await self._beat()
                await trio.sleep_until(start + self.timing.interval)
        # halted: stay here, like a hung node, until the node closes
        await trio.sleep_forever()

    async def serve_watchdog(self, *, task_status: trio.TaskStatus[None]) -> None:
        """Fence this node when no beat has been confirmed for ``self_fence_after`` seconds
        of the monotonic clock, counted from that beat's send time; never returns."""
        task_status.started()
        while True:
            confirmed = self._confirmed
            with trio.move_on_at(self._confirmed_sent + self.timing.self_fence_after):
                await confirmed.wait()
                continue
            self._fence(f"no confirmed heartbeat for {self.timing.self_fence_after:g} s")
            await confirmed.wait()


@asynccontextmanager
async def open_cluster_node(
    store: ClusterStore,
    bus: Bus,
    role: NodeRole,
    make_id: Callable[[str], str],
    boot: str,
    timing: NodeTiming | None = None,
) -> AsyncIterator[ClusterNode]:
    """Register this node (``make_id(boot)``, ``role``) and keep it alive for the block.

    ``make_id(boot) -> node id``: also called with a new boot when the row expired and the
    node registers again. Raises ``Conflict`` (``node_id_taken``) if the id was used before,
    ``Unavailable`` if the database does not answer. On exit the heartbeat stops and the row
    is released (at most ``RELEASE_CEILING`` seconds, shielded); a failed release is logged,
    the row then expires after its TTL.
    """
    node = ClusterNode(store, bus, role, make_id, boot, timing or NodeTiming())
    await node._register()
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(node.serve_heartbeat)
            await nursery.start(node.serve_watchdog)
            try:
                yield node
            finally:
                nursery.cancel_scope.cancel()
    finally:
        await node._release()  # at once if ``leave`` released it already


async def serve_rate_share(
    node: ClusterNode,
    limiter: RateLimiter,
    rate: float,
    burst: int,
    also: Sequence[Callable[[int], None]] = (),
) -> None:
    """Keep ``limiter`` at this node's ``rate_share`` of ``rate``/``burst`` for the live node
    count (``node.nodes``, refreshed by each heartbeat), and call each of ``also`` with that
    count (e.g. ``AuthThrottle.share``), until cancelled (docs/api.md "Rate limits in a
    cluster")."""
    while True:
        count = len(node.nodes)
        limiter.set_limits(*rate_share(rate, burst, count))
        for apply in also:
            apply(count)
        await node.wait_changed()
