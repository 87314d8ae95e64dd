"""A cluster node's graceful leave (SPEC §10; docs/cluster.md §3 "Handover", §10 "Built:
graceful leave"): hand the node's chats over so the other nodes take them **at once**, not
after the lease's 5 s expiry, and lose nothing acknowledged.

``serve`` has already stopped both listeners and closed every stream with the reconnect hint
(WebSocket 1012, SSE ``retry:`` then the end), and let the in-flight HTTP requests finish,
when ``hand_over`` runs. In order:

1. **refuse new work** (``ChatRouter.begin_leave``): no activation here any more; the running
   actors retire (a batch in progress commits and is answered, calls queued behind it fail
   ``ChatMoved`` unrun); the node leaves the ``cmd.any`` queue group. A forwarded command that
   reaches the inbox from here is held (≤ ``router.HOLD_CEILING``) and answered ``chat_moved``
   after step 4, so its sender re-resolves straight to the new owner;
2. **drain the actors**: wait until none runs (≤ ``DRAIN_CEILING``);
3. **publish the outbox**: wait until the publisher has stored every event those batches
   wrote (≤ ``wiring.DRAIN_TIMEOUT``; rows left over go out through the next owner or another
   node's sweeper, in order: the per-chat advisory lock);
4. **release**: stop the heartbeat and end the node's row (``ClusterNode.leave``): its leases
   are takeable now (their epochs go up: a write of ours that somehow came later is fenced);
   then the held commands are answered.

Each step is bounded, so a leave never hangs on a dead dependency; a bound that is hit is
logged and the next step runs (safety never depends on it: the fence does).
This module must never open a listener or touch SQL itself.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import trio

from fechatter.actors.directory import Directory
from fechatter.cluster.node import ClusterNode
from fechatter.cluster.publisher import OutboxPublisher
from fechatter.cluster.router import ChatRouter
from fechatter.cluster.wiring import DRAIN_TIMEOUT

log = logging.getLogger(__name__)

# Seconds the running actors get to finish their batch in progress (a group commit is
# bounded by the storage's operation timeout; in practice milliseconds).
DRAIN_CEILING = 5.0


@dataclass(frozen=True, slots=True)
class LeaveReport:
    """What a graceful leave did: ``chats`` actors retired, ``held`` commands, whether each
    bounded step finished in time, whether the row was ended here, and the whole duration
    (seconds)."""

    chats: int
    held: int  # forwarded commands held until the release, then answered chat_moved
    drained: bool
    published: bool
    released: bool
    seconds: float


async def hand_over(
    node: ClusterNode, router: ChatRouter, directory: Directory, publisher: OutboxPublisher
) -> LeaveReport:
    """Run steps 1 to 4 above; returns the ``LeaveReport`` (also logged at INFO). Never raises
    for a dependency that is down (each step is bounded); cancellation (a second signal)
    stops it, and the node's exit still ends its row."""
    start = trio.current_time()
    chats = directory.statistics().chat_actors
    await router.begin_leave()
    with trio.move_on_after(DRAIN_CEILING) as draining:
        await directory.wait_empty()
    if draining.cancelled_caught:
        log.warning("leaving: chat actors still running after %ss; releasing", DRAIN_CEILING)
    with trio.move_on_after(DRAIN_TIMEOUT) as publishing:
        await publisher.wait_idle()
    if publishing.cancelled_caught:
        log.warning(
            "leaving: events still in the outbox after %ss; another node publishes them",
            DRAIN_TIMEOUT,
        )
    released = await node.leave()
    router.released()
    report = LeaveReport(
        chats=chats,
        held=router.held,
        drained=not draining.cancelled_caught,
        published=not publishing.cancelled_caught,
        released=released,
        seconds=trio.current_time() - start,
    )
    log.info(
        "cluster node %s left: %d chat actors drained, %d commands held, outbox %s, row %s,"
        " in %.3f s",
        node.node_id,
        report.chats,
        report.held,
        "published" if report.published else "left to others",
        "ended" if report.released else "not ended (it expires by itself)",
        report.seconds,
    )
    return report
