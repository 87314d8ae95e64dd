"""UserActors and the UserHub: the per-user end of the fan-out, resume and presence.

The ``UserHub`` is the ``EventSink`` ChatActors publish to. It stamps each event with the next
process-wide ``seq`` and hands it, synchronously, to the ``UserActor`` of every addressed user
that has one (the fast lane: no mailbox hop, no task switch per recipient). A ``UserActor``
exists while its user has a live stream and lingers ``retention`` seconds after the last one
closes. It appends every event to a bounded replay ring and pushes it to each of its streams.

Resume: a stream that presents the id of the last event it saw gets exactly the ring's events
after it — provided the ring provably holds them all (the id is of this process's epoch, the
actor existed when that event was published, and nothing newer than it fell off the ring);
otherwise it is told to ``resync``. Attaching a stream and taking the replay happen in one
synchronous step, so nothing is lost or doubled between them.

Each UserActor's task (in the hub's nursery) owns its lifetime: presence turns offline
``presence_grace`` seconds after the last stream closes (a quick reconnect is invisible), and
the actor is dropped after ``retention``. Its inputs are all synchronous calls from the same trio
thread, so it has a wake-up event rather than a mailbox: a mailbox would add a hop and nothing
else. Presence changes are coalesced and flushed every ``presence_flush`` seconds. In cluster
mode (``presence`` set: a ``PresencePort``) the flush records each changed user in the cluster,
which announces to co-members on every node, and ``arriving`` records a user before their
first stream here is attached.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import trio

from fechatter import logs
from fechatter.actors.ports import PresencePort, StreamPort, UserRouting
from fechatter.close_reasons import CloseReason
from fechatter.errors import Unavailable
from fechatter.events import PRESENCE, RESYNC, Event
from fechatter.metrics import FanoutTimes

log = logging.getLogger(__name__)

# A seq is a count of events published by one process: 20 digits is far past any it reaches,
# and keeps int() away from its digit limit (a longer id is unprovable: resync).
MAX_SEQ_DIGITS = 20

CoMembers = Callable[[int], Awaitable[Iterable[int]]]
# (user id, online?) → the ``presence`` event's data with the user's chosen status
# (``fechatter.status.presence_event``); set by the status service (docs/api.md "User status").
PresenceData = Callable[[int, bool], Awaitable[dict[str, Any]]]


@dataclass(frozen=True, slots=True)
class HubConfig:
    ring_size: int = 1000
    retention: float = 300.0
    presence_grace: float = 5.0
    presence_flush: float = 0.25
    presence_max_chat_size: int = 100


@dataclass(frozen=True, slots=True)
class HubStatistics:
    connected_users: int
    connections: int
    lingering_users: int
    delivered: int
    published: int


@dataclass(frozen=True, slots=True)
class Prepared:
    """Cluster mode: what ``UserHub.arriving`` found for the stream's ``attach``.

    ``position``: the ``ready`` id; ``resync``: a SPEC reason, or None; ``after``: the
    resume point's stream sequence (None: no id given); ``durable``: the events read from
    the stream after it (None: the node's ring proves them), read up to ``through`` at
    least."""

    position: str
    resync: str | None = None
    after: int | None = None
    durable: list[Event] | None = None
    through: int = 0


@dataclass(frozen=True, slots=True)
class Attached:
    """What a new stream starts with: its ``ready`` id, then ``resync`` or the replay."""

    position: str
    replay: list[Event]
    resync: str | None


@dataclass(eq=False, slots=True)
class _Feed:
    """Cluster mode, per stream: the newest stream sequence it was sent with an id, the
    ones its durable replay sent ahead of their live copies (skipped when those arrive),
    and its start (``ready``'s or the resume point's stream sequence: older events are
    not this stream's)."""

    high: int
    skip: set[int]
    start: int = 0


class UserActor:
    """One user's streams and bounded replay ring."""

    __slots__ = (
        "_changed",
        "evicted_seq",
        "feeds",
        "high",
        "ring",
        "since_seq",
        "streams",
        "user_id",
    )

    def __init__(self, user_id: int, ring_size: int, since_seq: int) -> None:
        self.user_id = user_id
        self.ring: deque[Event] = deque(maxlen=ring_size)
        self.streams: list[StreamPort] = []
        self.since_seq = since_seq  # events up to this seq were published before we existed
        self.evicted_seq = 0  # the newest seq that fell off the ring
        self._changed = trio.Event()
        # Cluster mode only: seq is the stream sequence S; ``high`` the newest one delivered.
        self.high = 0
        self.feeds: dict[int, _Feed] = {}  # id(stream) → its feed

    def deliver(self, event: Event) -> None:
        ring = self.ring
        if len(ring) == ring.maxlen:
            self.evicted_seq = ring[0].seq
        ring.append(event)
        for stream in self.streams:
            stream.push_event(event)

    def deliver_stored(self, event: Event) -> None:
        """Cluster mode: ``event.seq`` is its stream sequence. The ring stays ordered by it
        (a repeat is dropped). Events arrive in stream order per user (the node's
        ``Sequencer``), so each stream gets it with its id, ids only increasing; one at or
        before a stream's start is skipped there (docs/cluster.md §10)."""
        seq = event.seq
        ring = self.ring
        if seq <= self.high:
            if any(e.seq == seq for e in ring):
                return  # already delivered here
            if len(ring) == ring.maxlen:
                self.evicted_seq = ring[0].seq
                ring.popleft()
            at = len(ring)
            while at and ring[at - 1].seq > seq:
                at -= 1
            ring.insert(at, event)
        else:
            self.high = seq
            if len(ring) == ring.maxlen:
                self.evicted_seq = ring[0].seq
            ring.append(event)
        for stream in self.streams:
            feed = self.feeds.get(id(stream))
            if feed is None:
                stream.push_event(event)
                continue
            if seq in feed.skip:
                feed.skip.discard(seq)
            elif seq > feed.high:
                feed.high = seq
                stream.push_event(event)
            elif seq > feed.start:
                # Older than an id this stream was sent: the node's release in stream order
                # (cluster/order.py) makes this unreachable; were it reached, the ids sent
                # since would claim this event, so the stream is told to resync.
                log.error("user %d: event %d after %d; resync", self.user_id, seq, feed.high)
                self.evicted_seq = max(self.evicted_seq, self.high)
                stream.push_event(Event(RESYNC, {"reason": "history_unavailable"}))
            # else: before the stream's ready or resume point; the client has it already.

    def replay_after(self, seq: int) -> list[Event] | None:
        """The ring's events after ``seq``, or None if some may be missing."""
        if seq < self.since_seq or seq < self.evicted_seq:
            return None
        return [e for e in self.ring if e.seq > seq]

    def poke(self) -> None:
        self._changed.set()

    async def wait_changed(self) -> None:
        await self._changed.wait()
        self._changed = trio.Event()


class UserHub:
    """Online users by id; the ``EventSink`` of the actor system."""

    def __init__(
        self,
        nursery: trio.Nursery | None = None,
        config: HubConfig | None = None,
        co_members: CoMembers | None = None,
    ) -> None:
        self.config = config or HubConfig()
        self._nursery = nursery
        self._co_members = co_members
        self.epoch = secrets.token_hex(4)
        self._seq = 0
        self._users: dict[int, UserActor] = {}
        self._present: set[int] = set()  # announced online (streams, or within grace)
        self._presence_pending: dict[int, str] = {}
        self._status_pending: set[int] = set()  # chosen status changed: announce again
        self._presence_wake = trio.Event()
        # Set by the status service (``fechatter.domain.status``): presence events then carry
        # the chosen status (away/busy). None: ``{user_id, status: online|offline}``.
        self.presence_data_of: PresenceData | None = None
        self._delivered = 0
        self.fanout = FanoutTimes()  # per committed event with local streams (metrics)
        self._connection_ids = 0
        # Cluster mode only (set by ``fechatter.cluster.wiring`` for its lifetime): told when
        # a user gets their first UserActor and when it is dropped. None in one process.
        self.routing: UserRouting | None = None
        # Cluster mode only (set by ``fechatter.cluster.presence``): presence is recorded in
        # the cluster and announced there; the flush syncs each changed user with it.
        self.presence: PresencePort | None = None
        self._arriving: dict[int, int] = {}  # user → streams inside ``arriving`` now
        # Cluster mode (C3): event ids are ``<incarnation>-<stream sequence>``; set by the
        # wiring ("" while the stream is unknown). None: one process, ids ``<epoch>-<seq>``.
        self.incarnation: str | None = None
        self._high = 0  # cluster mode: the newest stream sequence published here

    # -- publishing (the fast lane) -------------------------------------------------------
    def publish(self, user_ids: Iterable[int], event: Event) -> None:
        if self.incarnation is not None:
            self._publish_stored(user_ids, event)
            return
        self._seq += 1
        event.stamp(self.epoch, self._seq)
        users = self._users
        delivered = 0
        start = time.time()
        for uid in user_ids:
            actor = users.get(uid)
            if actor is not None:
                actor.deliver(event)
                delivered += len(actor.streams)
        self._delivered += delivered
        if delivered and event.committed:
            self._timed(start, event.committed)

    def _publish_stored(self, user_ids: Iterable[int], event: Event) -> None:
        """Cluster mode: an event with a stream sequence (``stream_seq``, set by the event
        router) gets the id ``<E>-<S>`` and the users' rings; one without (typing,
        presence) is ephemeral: pushed to their streams with no id, never replayed."""
        stream_seq = getattr(event, "stream_seq", 0)
        users = self._users
        delivered = 0
        if not isinstance(stream_seq, int) or stream_seq <= 0:
            for uid in user_ids:
                actor = users.get(uid)
                if actor is not None:
                    for stream in actor.streams:
                        stream.push_event(event)
                    delivered += len(actor.streams)
            self._delivered += delivered
            return
        self._seq += 1
        event.stamp(self.incarnation or "", stream_seq)
        self._high = max(self._high, stream_seq)
        start = time.time()
        for uid in user_ids:
            actor = users.get(uid)
            if actor is not None:
                actor.deliver_stored(event)
                delivered += len(actor.streams)
        self._delivered += delivered
        if delivered:
            self._timed(start, event.committed)

    def _timed(self, start: float, committed: float) -> None:
        """Count a published event's fan-out time (``FanoutTimes``; wall-clock seconds,
        ``committed`` 0.0: commit time unknown)."""
        end = time.time()
        self.fanout.observe(end - start, end - committed if committed else None)

    @property
    def position(self) -> str:
        """The id of the newest event published, as a resume point."""
        if self.incarnation is not None:
            return f"{self.incarnation}-{self._high}"
        return f"{self.epoch}-{self._seq}"

    def next_connection_id(self) -> int:
        self._connection_ids += 1
        return self._connection_ids

    def resync(self, user_ids: Iterable[int], reason: str) -> None:
        """Events for ``user_ids`` were lost before they reached this hub (cluster mode: the
        event router could not prove a chat's history): each of their streams gets a
        ``resync`` event (no id) now, and a resume from any id up to now is answered with
        ``resync`` too (the ring cannot prove it). ``reason``: a SPEC resync reason."""
        for uid in user_ids:
            actor = self._users.get(uid)
            if actor is None:
                continue
            newest = self._seq if self.incarnation is None else self._high
            actor.evicted_seq = max(actor.evicted_seq, newest)
            event = Event(RESYNC, {"reason": reason})
            for stream in actor.streams:
                stream.push_event(event)

    async def arriving(self, user_id: int, last_event_id: str | None = None) -> Prepared | None:
        """Call right before ``attach`` (no await between) and hand it the result: in
        cluster mode, a user without a UserActor here gets their events routed to this node
        first (``UserRouting``), so every event after the stream's ``ready`` reaches it,
        and the resume point is checked (docs/cluster.md §5): the ring, or a durable replay
        from the stream; a user not present here is recorded present in the cluster
        (``PresencePort.sync``), so every node lists them online once the stream is ready.
        None (a no-op) in one process. An arrival that does not return (cancelled, failed)
        calls ``user_gone`` when no other stream of the user is arriving or attached here,
        so its routing does not leak, and queues a presence sync (the flush then withdraws
        a record made for a stream that never attached)."""
        presence = self.presence
        done = False
        try:
            prepared = await self._route_arrival(user_id, last_event_id)
            if presence is not None and user_id not in self._present:
                await presence.sync(user_id, True)
            done = True
            return prepared
        finally:
            if not done and presence is not None and user_id not in self._present:
                self._presence_pending[user_id] = "offline"
                self._presence_wake.set()

    async def _route_arrival(self, user_id: int, last_event_id: str | None) -> Prepared | None:
        routing = self.routing
        if routing is None:
            return None
        if user_id not in self._users:
            await self._route(routing, user_id)
        return await self._prepare(routing, user_id, last_event_id)

    async def _prepare(
        self, routing: UserRouting, user_id: int, last_event_id: str | None
    ) -> Prepared:
        """The ready position and what the resume point needs (see ``arriving``)."""
        try:
            state = await routing.stream_state()
            self.incarnation = state.incarnation
        except Unavailable:
            state = None
        incarnation = self.incarnation or ""
        newest = state.last_seq if state is not None else self._high
        actor = self._actor(user_id, newest)
        position = f"{incarnation}-{newest}"
        if last_event_id is None:
            return Prepared(position)
        parsed = _parse_stored_id(last_event_id)
        if parsed is None or parsed[0] != incarnation or parsed[1] > newest:
            return Prepared(position, "unknown_event_id")
        after = parsed[1]
        if actor.replay_after(after) is not None:
            return Prepared(f"{incarnation}-{after}", after=after)
        if state is None:  # NATS unavailable: only the ring could have proved it
            return Prepared(position, "history_unavailable")
        if after < state.first_seq - 1:
            return Prepared(position, "history_unavailable")  # evicted from the stream
        try:
            replay = await routing.replay(user_id, after)
        except Unavailable as exc:
            log.warning("resume of user %d from %d failed: %s", user_id, after, exc)
            return Prepared(position, "history_unavailable")
        if replay.resync is not None:
            return Prepared(position, replay.resync)
        return Prepared(f"{incarnation}-{after}", None, after, replay.events, replay.through)

    async def _route(self, routing: UserRouting, user_id: int) -> None:
        self._arriving[user_id] = self._arriving.get(user_id, 0) + 1
        arrived = False
        try:
            await routing.user_arriving(user_id)
            arrived = True
        finally:
            left = self._arriving.pop(user_id) - 1
            if left:
                self._arriving[user_id] = left
            elif not arrived and user_id not in self._users:
                # Cancelled (the stream went) before its attach, and no other stream of the
                # user is arriving or attached: nothing will ever call user_gone for it.
                routing.user_gone(user_id)

    # -- streams ----------------------------------------------------------------------------
    def _actor(self, uid: int, since: int) -> UserActor:
        """The user's UserActor, made (with its lifetime task) if they have none."""
        actor = self._users.get(uid)
        if actor is None:
            actor = UserActor(uid, self.config.ring_size, since)
            self._users[uid] = actor
            if self._nursery is not None:
                self._nursery.start_soon(self._run_user, actor, name=f"UserActor#{uid}")
        return actor

    def attach(
        self, stream: StreamPort, last_event_id: str | None, prepared: Prepared | None = None
    ) -> Attached:
        """Register a stream and compute what it must be sent first (one synchronous step).
        ``prepared``: what ``arriving`` returned (cluster mode)."""
        if prepared is not None:
            return self._attach_stored(stream, prepared)
        uid = stream.user_id
        actor = self._actor(uid, self._seq)
        replay: list[Event] = []
        resync = None
        position = self.position
        if last_event_id is not None:
            seq = self._parse_id(last_event_id)
            found = None if seq is None else actor.replay_after(seq)
            if found is None:
                resync = "unknown_event_id" if seq is None else "history_unavailable"
            else:
                replay = found
                position = last_event_id
        actor.streams.append(stream)
        actor.poke()
        self._set_presence(uid, "online")
        return Attached(position, replay, resync)

    def _attach_stored(self, stream: StreamPort, prepared: Prepared) -> Attached:
        """Cluster mode's ``attach``: the ring's events after the resume point, or the
        durable replay merged with what the ring got meanwhile (deduplicated by stream
        sequence, in order); the stream then gets live events newer than the last one."""
        uid = stream.user_id
        actor = self._actor(uid, self._high)
        incarnation = self.incarnation or ""
        replay: list[Event] = []
        resync, position, after = prepared.resync, prepared.position, prepared.after
        feed = _Feed(_position_seq(position), set(), _position_seq(position))
        if resync is None and after is not None:
            if prepared.durable is None:
                found = actor.replay_after(after)
                if found is None:  # the ring moved on between arriving and attach
                    resync, position = "history_unavailable", self.position
                else:
                    replay = found
            elif actor.since_seq > prepared.through or actor.evicted_seq > prepared.through:
                resync, position = "history_unavailable", self.position  # ring overflowed
            else:
                merged: dict[int, Event] = {}
                for event in prepared.durable:
                    event.stamp(incarnation, event.seq)
                    merged[event.seq] = event
                for event in actor.ring:
                    if event.seq > after:
                        merged.setdefault(event.seq, event)
                replay = [merged[seq] for seq in sorted(merged)]
                feed.skip = {e.seq for e in prepared.durable if e.seq > actor.high}
            if replay:
                feed.high = replay[-1].seq
            if resync is not None:
                feed.high = _position_seq(position)
        actor.feeds[id(stream)] = feed
        actor.streams.append(stream)
        actor.poke()
        self._set_presence(uid, "online")
        return Attached(position, replay, resync)

    def detach(self, stream: StreamPort) -> None:
        actor = self._users.get(stream.user_id)
        if actor is not None and stream in actor.streams:
            actor.streams.remove(stream)
            actor.feeds.pop(id(stream), None)
            actor.poke()

    def revoke(self, user_id: int, version: int) -> int:
        """Close the user's streams opened under a security version below ``version``
        (their tokens were revoked); returns how many. WebSockets get close code 4001."""
        actor = self._users.get(user_id)
        if actor is None:
            return 0
        closing = [s for s in actor.streams if s.security_version < version]
        for stream in closing:
            stream.fail(CloseReason.TOKEN_REVOKED)
        return len(closing)

    def _parse_id(self, event_id: str) -> int | None:
        """The seq of one of this epoch's ids, else None (any string: it comes from a client)."""
        epoch, _, seq = event_id.strip().partition("-")
        if (
            epoch != self.epoch
            or len(seq) > MAX_SEQ_DIGITS
            or not (seq.isascii() and seq.isdigit())
        ):
            return None
        value = int(seq)
        return value if value <= self._seq else None

    # -- presence and lifetime -----------------------------------------------------------
    def online(self, user_ids: Iterable[int]) -> list[int]:
        """Those of ``user_ids`` present on this node (a stream, or within the grace)."""
        present = self._present
        return [uid for uid in user_ids if uid in present]

    def is_present(self, user_id: int) -> bool:
        """Whether ``user_id`` is present on this node (a stream, or within the grace)."""
        return user_id in self._present

    async def online_anywhere(self, user_ids: Sequence[int]) -> list[int]:
        """Those of ``user_ids`` online on any node, in the given order: this node's
        ``online`` in one process; in cluster mode also those the cluster records online
        (``PresencePort.online``: one query), which raises ``Unavailable``."""
        presence = self.presence
        if presence is None:
            return self.online(user_ids)
        found = await presence.online(user_ids)
        local = self._present
        return [uid for uid in user_ids if uid in found or uid in local]

    async def presence_data(self, user_id: int, online: bool) -> dict[str, Any]:
        """The ``presence`` event data for ``user_id`` (online or not): with the chosen
        status when the status service is set; a lookup that fails falls back to plain
        ``online`` (best-effort, logged). Never raises but cancellation."""
        lookup = self.presence_data_of
        if lookup is not None:
            try:
                return await lookup(user_id, online)
            except Unavailable:
                log.warning("status of user %d not read: storage unavailable", user_id)
            except Exception:
                log.exception("status of user %d not read", user_id)
        return {"user_id": user_id, "status": "online" if online else "offline"}

    def announce_status(self, user_id: int) -> None:
        """``user_id``'s chosen status changed (set, cleared, expired): announce their shown
        status again to their presence peers and their own streams, if they are online (an
        offline user shows ``offline`` whatever they chose). In cluster mode through the
        ``PresencePort`` (every node); else at the next presence flush. Never blocks."""
        if self.presence is not None:
            self.presence.announce(user_id)
            return
        self._status_pending.add(user_id)
        self._presence_wake.set()

    def _set_presence(self, uid: int, status: str) -> None:
        is_present = uid in self._present
        if (status == "online") == is_present:
            return
        if status == "online":
            self._present.add(uid)
        else:
            self._present.discard(uid)
        if self.presence is not None:
            # Cluster mode: the flush syncs the user with the cluster's record from the
            # current state; a flip back must still be synced (an arrival may have
            # recorded the user before the flip).
            self._presence_pending[uid] = status
        elif self._presence_pending.get(uid) is None:
            self._presence_pending[uid] = status
        else:  # flipped back before the flush: nothing to announce
            del self._presence_pending[uid]
        self._presence_wake.set()

    async def _run_user(self, actor: UserActor) -> None:
        """Own one UserActor's lifetime: presence grace, then retention, then drop it."""
        # The actor outlives the stream that started it: not that connection's log context.
        logs.enter_task(user_id=actor.user_id)
        cfg = self.config
        try:
            while True:
                while actor.streams:
                    await actor.wait_changed()
                with trio.move_on_after(cfg.presence_grace):
                    while not actor.streams:
                        await actor.wait_changed()
                if actor.streams:
                    continue
                self._set_presence(actor.user_id, "offline")
                with trio.move_on_after(max(0.0, cfg.retention - cfg.presence_grace)):
                    while not actor.streams:
                        await actor.wait_changed()
                if not actor.streams:
                    return
        finally:
            if self._users.get(actor.user_id) is actor and not actor.streams:
                del self._users[actor.user_id]
                self._set_presence(actor.user_id, "offline")
                if self.routing is not None:
                    self.routing.user_gone(actor.user_id)

    async def serve_presence(self) -> None:
        """Flush coalesced presence changes to online co-members, forever."""
        while True:
            await self._presence_wake.wait()
            self._presence_wake = trio.Event()
            await trio.sleep(self.config.presence_flush)  # coalescing window, not a sync stand-in
            pending, self._presence_pending = self._presence_pending, {}
            changed, self._status_pending = self._status_pending, set()
            presence = self.presence
            if presence is not None:
                # Cluster mode: record and announce through the cluster (every node's
                # co-members, this one's included); ``sync`` never raises but cancellation.
                for uid in pending:
                    await presence.sync(uid, uid in self._present)
                continue
            if self._co_members is None:
                continue
            for uid in sorted(changed - pending.keys()):
                if uid in self._present:  # else shown offline: nothing changed for others
                    pending[uid] = "status"
            for uid, status in pending.items():
                try:
                    others = await self._co_members(uid)
                except Unavailable:
                    # Storage is down or slow (an operational condition, not a bug): presence
                    # is best-effort, clients learn the truth from /api/online-users.
                    log.warning("presence for user %d not announced: storage unavailable", uid)
                    continue
                except Exception:
                    log.exception("presence for user %d not announced", uid)
                    continue
                recipients = self.online(o for o in others if o != uid)
                if status == "status":  # the user's own devices follow their status too
                    recipients.append(uid)
                if recipients:
                    data = await self.presence_data(uid, status != "offline")
                    self.publish(recipients, Event(PRESENCE, data))

    def statistics(self) -> HubStatistics:
        connected = sum(1 for a in self._users.values() if a.streams)
        connections = sum(len(a.streams) for a in self._users.values())
        return HubStatistics(
            connected_users=connected,
            connections=connections,
            lingering_users=len(self._users) - connected,
            delivered=self._delivered,
            published=self._seq,
        )


def _parse_stored_id(event_id: str) -> tuple[str, int] | None:
    """Cluster mode: ``(E, S)`` of an id ``<E>-<S>`` (any string: it comes from a client),
    else None."""
    incarnation, _, seq = event_id.strip().partition("-")
    if (
        len(incarnation) > MAX_SEQ_DIGITS
        or not (incarnation.isascii() and incarnation.isalnum())
        or len(seq) > MAX_SEQ_DIGITS
        or not (seq.isascii() and seq.isdigit())
    ):
        return None
    return incarnation, int(seq)


def _position_seq(position: str) -> int:
    """The stream sequence of a cluster-mode position ``<E>-<S>`` (0 if none)."""
    _, _, seq = position.rpartition("-")
    return int(seq) if seq.isdigit() else 0
