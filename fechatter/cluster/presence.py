"""Presence and online users across nodes (docs/cluster.md §6, §8 "Built: C2 and B5").

``ClusterPresence`` is the ``UserHub``'s ``PresencePort`` in cluster mode:

- **Record.** A user present on this node (a stream, or within ``presence_grace`` after the
  last one: the hub decides, as in one process) has a ``user_presence`` row for this node.
  ``sync(user, present)`` inserts or deletes it under the user's advisory lock
  (``storage.presence``); the hub calls it before a user's first stream here is attached
  (``UserHub.arriving``: every node lists the user once the stream is ``ready``) and from its
  coalescing flush after every change.
- **Announce.** When a change flipped the user's cluster-wide state (no other counted row),
  a ``presence`` event goes to the user's presence peers that are online: to those present on
  this node through the hub, to those with a row on another live node as a core NATS message
  on ``<prefix>.rt.user.<peer>`` (the peer's node reads it on its notice subscription and
  delivers it without an id: never stored, never replayed). Each message carries this
  process's ``Fx-Origin``, so a node drops its own (a peer present here and elsewhere gets
  it once). Announcements go out in order through one bounded queue and task. The event's
  data comes from ``UserHub.presence_data`` (the chosen status, issue 14). A changed chosen
  status (``announce``: set, cleared, expired) is announced the same way when the user is
  online anywhere, to their online peers and to the user's own streams on every node.
- **Reap.** Every heartbeat (≤ ``MAINTAIN_EVERY`` s) the node deletes the rows of nodes dead
  for longer than the grace (``PresenceStore.reap``; of nodes reaping at once, one gets each
  row) and announces ``offline`` for the users left without a counted row; it re-keys its own
  rows when it registered again under a new id, and retries the users whose sync failed.

Best-effort (presence never blocks a stream or a chat): a sync that fails (database down or
slow, ``SYNC_TIMEOUT``) marks the user for a retry and opens a short breaker (later syncs
skip the database for ``BREAKER`` seconds); NATS down → the announcement's remote part is
lost (logged once per streak; peers learn the truth from ``/api/online-users``); the
announcement queue full → that announcement is dropped (counted). This module never touches
sockets or SQL itself.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import trio

from fechatter import events
from fechatter.actors.user import UserHub
from fechatter.bus.base import Bus
from fechatter.cluster.events import H_EVENT
from fechatter.cluster.node import ClusterNode
from fechatter.errors import FechatterError, Unavailable
from fechatter.events import Event
from fechatter.storage.presence import Change, PresenceStore

log = logging.getLogger(__name__)

H_ORIGIN = "Fx-Origin"  # the publishing process's token: a node drops its own ephemerals
SYNC_TIMEOUT = 3.0  # seconds one record change may take (normally one round trip or two)
BREAKER = 1.0  # seconds syncs skip the database after one failed (retried by maintain)
MAINTAIN_EVERY = 2.0  # seconds between maintenance passes at most (normally each beat)
ANNOUNCE_QUEUE = 4096  # announcements waiting to go out; full → dropped (counted)
STATUS = "status"  # a queued announcement of a changed chosen status (not a flip)


@dataclass
class PresenceStatistics:
    """Counters for tests and metrics."""

    claims: int = 0  # rows inserted
    releases: int = 0  # rows deleted
    failures: int = 0  # syncs that failed or timed out (retried)
    announced: int = 0  # presence events announced (each to every online peer)
    remote: int = 0  # core messages published to other nodes' users
    dropped: int = 0  # announcements dropped: the queue was full
    reaped: int = 0  # users announced offline after their node died


class ClusterPresence:
    """The hub's ``PresencePort`` for one node; run ``run`` in a nursery for its lifetime."""

    def __init__(
        self,
        *,
        store: PresenceStore,
        node: ClusterNode,
        bus: Bus,
        hub: UserHub,
        prefix: str,
        origin: str,
        max_chat_size: int,
    ) -> None:
        self._store = store
        self._node = node
        self._bus = bus
        self._hub = hub
        self._prefix = prefix
        self.origin = origin
        self._max_chat_size = max_chat_size
        self._node_id = node.node_id  # the node id this node's rows carry
        self._claimed: set[int] = set()  # users with a row of ours (as far as we know)
        self._dirty: set[int] = set()  # users whose last sync failed: state unknown
        self._locks: dict[int, trio.Lock] = {}  # per user, while in use
        self._down_until = -float("inf")  # the breaker: trio time until which syncs skip
        self._send, self._announcements = trio.open_memory_channel[tuple[int, str]](ANNOUNCE_QUEUE)
        self._nats_failing = False
        self.stats = PresenceStatistics()

    # -- the hub's port ------------------------------------------------------------------
    async def sync(self, user_id: int, present: bool) -> None:
        """``PresencePort.sync``: make this node's row of ``user_id`` exist iff ``present``
        and queue an announcement when the user's cluster-wide state flipped. Never raises
        but cancellation; a failure (or ``SYNC_TIMEOUT``) leaves the user for a retry."""
        lock = self._locks.setdefault(user_id, trio.Lock())
        try:
            async with lock:
                if user_id not in self._dirty and present == (user_id in self._claimed):
                    return
                if trio.current_time() < self._down_until:
                    self._dirty.add(user_id)
                    return
                change = None
                with trio.move_on_after(SYNC_TIMEOUT):
                    change = await self._change(user_id, present)
                if change is None:
                    self._failed(user_id, "timed out")
                    return
                self._dirty.discard(user_id)
                if change.global_change:
                    self._queue(user_id, "online" if present else "offline")
        finally:
            if not lock.locked() and self._locks.get(user_id) is lock:
                del self._locks[user_id]

    async def online(self, user_ids: Sequence[int]) -> set[int]:
        """``PresencePort.online``: one query (``PresenceStore.online``); ``Unavailable``."""
        return await self._store.online(user_ids)

    def announce(self, user_id: int) -> None:
        """``PresencePort.announce``: queue a status announcement (``STATUS``)."""
        self._queue(user_id, STATUS)

    async def _change(self, user_id: int, present: bool) -> Change | None:
        try:
            if present:
                change = await self._store.claim(user_id, self._node_id)
                self._claimed.add(user_id)
                self.stats.claims += change.changed
            else:
                change = await self._store.release(user_id, self._node_id)
                self._claimed.discard(user_id)
                self.stats.releases += change.changed
        except Unavailable as exc:
            self._failed(user_id, str(exc))
            return None
        except Exception:  # a bug or a refusal: never let it end the hub's flush
            log.exception("presence of user %d not recorded", user_id)
            self._failed(user_id, "error")
            return None
        return change

    def _failed(self, user_id: int, why: str) -> None:
        if trio.current_time() >= self._down_until:
            log.warning("presence of user %d not recorded (%s); retrying", user_id, why)
        self.stats.failures += 1
        self._dirty.add(user_id)
        self._down_until = trio.current_time() + BREAKER

    def _queue(self, user_id: int, status: str) -> None:
        try:
            self._send.send_nowait((user_id, status))
        except trio.WouldBlock:
            self.stats.dropped += 1
            log.warning("presence %s of user %d dropped: queue full", status, user_id)

    # -- announcing ----------------------------------------------------------------------
    async def _announce(self, user_id: int, status: str) -> None:
        """Send ``presence`` to the user's online peers: this node's through the hub, other
        live nodes' as core messages on their users' subjects. Best-effort, bounded."""
        try:
            rows = await self._store.peers(user_id, self._max_chat_size)
            if status == STATUS and not await self._store.online([user_id]):
                return  # shown offline whatever they chose: nothing changed for anyone
        except Unavailable as exc:
            log.warning("presence %s of user %d not announced: %s", status, user_id, exc)
            return
        data = await self._hub.presence_data(user_id, status != "offline")
        event = Event(events.PRESENCE, data)
        self.stats.announced += 1
        peers = {peer for peer, _ in rows}
        if status == STATUS:  # the user's own devices follow their status too
            peers.add(user_id)
        local = self._hub.online(peers)
        if local:
            self._hub.publish(local, event)
        here = {self._node_id, self._node.node_id}
        remote = sorted({peer for peer, node in rows if node is not None and node not in here})
        if status == STATUS:
            # Their own nodes are not in ``rows``: publish on their subject anyway (no node
            # subscribed → NATS drops it; this node drops its own by ``Fx-Origin``).
            remote = sorted({*remote, user_id})
        payload = events.dumps(event.data)
        headers = {H_EVENT: events.PRESENCE, H_ORIGIN: self.origin}
        for peer in remote:
            try:
                await self._bus.publish(f"{self._prefix}.rt.user.{peer}", payload, headers)
            except Unavailable as exc:
                if not self._nats_failing:
                    log.warning("presence not sent to other nodes (NATS: %s)", exc)
                self._nats_failing = True
                return
            self.stats.remote += 1
        self._nats_failing = False

    # -- maintenance ----------------------------------------------------------------------
    async def maintain(self) -> None:
        """One pass: re-key our rows after a re-registration, reap dead nodes' rows (and
        announce ``offline`` for the users they leave without a counted row), retry the
        users whose sync failed. Skipped (but the re-key) while this node is fenced.
        Never raises but cancellation."""
        if self._node.node_id != self._node_id:
            await self._moved()
        if self._node.self_fenced:
            # Our own row may be expiring: a fenced node reaps nothing (it would take dead
            # rows from the live nodes that must announce them, its own users' included).
            return
        try:
            gone = await self._store.reap()
        except Unavailable as exc:
            log.debug("presence reap skipped: %s", exc)
            gone = []
        except FechatterError as exc:  # a refusal: never end the node's presence task
            log.warning("presence reap failed: %s", exc)
            gone = []
        for user_id in gone:
            # Present here but not recorded (a failed sync): the retry below records it.
            if not self._hub.is_present(user_id):
                self.stats.reaped += 1
                self._queue(user_id, "offline")
        for user_id in sorted(self._dirty):
            if trio.current_time() < self._down_until:
                break
            await self.sync(user_id, self._hub.is_present(user_id))

    async def _moved(self) -> None:
        old, new = self._node_id, self._node.node_id
        try:
            await self._store.move(old, new)
        except FechatterError as exc:  # Unavailable, or a refusal: retried next pass
            log.warning("presence rows not moved to %s yet: %s", new, exc)
            return
        self._node_id = new
        # Rows reaped before the move, or written under the old id meanwhile: sync every
        # user we recorded again (idempotent; announces only a real cluster-wide change).
        self._dirty |= self._claimed
        log.info("presence rows moved from %s to %s", old, new)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Announce and maintain until cancelled."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._serve_announcements)
            task_status.started()
            while True:
                with trio.move_on_after(MAINTAIN_EVERY):
                    await self._node.wait_changed()  # each heartbeat refresh
                await self.maintain()

    async def _serve_announcements(self) -> None:
        async for user_id, status in self._announcements:
            with trio.move_on_after(SYNC_TIMEOUT):
                await self._announce(user_id, status)
