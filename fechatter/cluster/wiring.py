"""Cluster event wiring (docs/cluster.md §4, §8 "Built: event wiring"): events cross nodes.

``open_cluster_events`` runs, for one node, the ``OutboxPublisher`` (B2) and the
``EventRouter`` (B3) and connects them to the actor system:

- **the owner's writes**: the ``ChatRouter`` activates actors with ``ChatStore(fence,
  outbox=True)``, and the ``Directory``'s sink becomes ``ClusterEvents``: after a commit a chat
  event only calls ``publisher.notify(chat_id)`` (the publisher reads the rows it wrote);
  ``typing`` is published as a core message on ``<prefix>.rt.chat.<id>`` (no ``Fx-Seq``, no
  stream sequence: each node's router delivers it to its local members but the typist);
- **the node's users**: the ``UserHub`` tells ``ClusterEvents`` (``UserRouting``) when a user
  gets their first UserActor here (their chats from storage → ``user_connected``, and a
  subscription to their notice subject ``<prefix>.rt.user.<uid>``) and when it is dropped
  (``user_disconnected``); the router delivers through ``UserHub.publish`` and resyncs
  through ``UserHub.resync``;
- **membership**: the router follows ``chat.member_*`` events of chats it is subscribed to; a
  join of a user with no other local member of the chat arrives as the publisher's notice on
  the user's subject (``member_added`` with the notice's stream sequence); a new chat is the
  same: its ``chat.created`` is its event 1 in the outbox with a join notice per member;
- **presence** (``fechatter.cluster.presence``): the hub's ``PresencePort``; a ``presence``
  event from another node arrives on the user's notice subject and is delivered here.

This module never touches sockets or SQL itself; it only connects the components.
"""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field

import trio

from fechatter import events
from fechatter.actors.directory import Directory
from fechatter.actors.ports import Replay, StreamState
from fechatter.actors.user import UserHub
from fechatter.bus.base import Bus, BusState, Gap, Message, Subscription
from fechatter.cluster.events import (
    H_EVENT,
    H_SEQ,
    H_STREAM_SEQ,
    RETRY_FIRST,
    RETRY_MAX,
    EventRouter,
    live_subject,
    open_event_router,
    stream_name,
)
from fechatter.cluster.node import ClusterNode
from fechatter.cluster.order import Sequencer
from fechatter.cluster.presence import H_ORIGIN, ClusterPresence
from fechatter.cluster.publisher import OutboxPublisher
from fechatter.cluster.resume import DurableReplay, read_stream_state
from fechatter.cluster.router import ChatRouter
from fechatter.cluster.workspace_events import is_workspace_event, routed
from fechatter.errors import Unavailable
from fechatter.events import Event
from fechatter.models import Chat, ChatType
from fechatter.storage.cluster import ClusterStore
from fechatter.storage.presence import PresenceStore

log = logging.getLogger(__name__)

ARRIVAL_TIMEOUT = 10.0  # seconds a stream waits for its user's routing before opening anyway
STREAM_READY_TIMEOUT = 10.0  # seconds the node waits at start for the stream to exist
PUBLISH_WAIT = 1.0  # seconds a write's answer waits for its events to be stored (then answers)
DRAIN_TIMEOUT = 2.0  # seconds a graceful stop gives the publisher to empty its queue
NOTICE_BUFFER = 256  # notices per user subscription (full → Gap → the user's chats reloaded)
EPHEMERAL_QUEUE = 1024  # typing events waiting to be published; full → dropped (counted)
# Events another node sends a user on their notice subject, delivered without an id (never
# stored, never replayed): presence, and the user's own chat mute (issue 14).
USER_EPHEMERAL = frozenset({events.PRESENCE, events.CHAT_MUTED})


@dataclass(eq=False)
class _Arrival:
    """One arriving user's routing task: ``routed`` once their chats are positioned."""

    routed: trio.Event = field(default_factory=trio.Event)
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    gone: bool = False


class ClusterEvents:
    """The node's event wiring: the actors' ``EventSink`` and the hub's ``UserRouting``."""

    def __init__(
        self,
        *,
        store: ClusterStore,
        bus: Bus,
        hub: UserHub,
        publisher: OutboxPublisher,
        router: EventRouter,
        nursery: trio.Nursery,
        prefix: str,
        stream: str = "",
    ) -> None:
        self._store = store
        self._stream = stream or stream_name(prefix)
        self.durable = DurableReplay(bus, store.user_chat_ids, prefix=prefix, stream=self._stream)
        self._bus = bus
        self._hub = hub
        self.publisher = publisher
        self.router = router
        self._nursery = nursery
        self._prefix = prefix
        self._arrivals: dict[int, _Arrival] = {}  # user → their routing task (notices too)
        self._routing_tasks = 0
        self.closed = False
        # This process's token on its ephemeral messages (presence): a node drops its own.
        self.origin = secrets.token_hex(8)
        self._ephemeral, self._ephemeral_out = trio.open_memory_channel[
            tuple[str, bytes, dict[str, str]]
        ](EPHEMERAL_QUEUE)
        self.ephemeral_dropped = 0  # typing events dropped: the queue was full
        self.presence: ClusterPresence | None = None  # set by open_cluster_events
        self.sequencer: Sequencer | None = None  # set by open_cluster_events

    # -- the actors' sink -------------------------------------------------------------------
    def publish(self, user_ids: Iterable[int], event: Event) -> None:
        """``EventSink.publish`` for ChatActors: a chat event was committed to the outbox →
        the publisher publishes it (every node's router delivers it); ``typing`` (no outbox
        row) → a core message on the chat's live subject, queued for ``serve_ephemeral``
        (every node subscribed to the chat, this one included, delivers it to its local
        members but the typist; queue full → dropped and counted). Never blocks."""
        if event.chat_id is None:
            self._hub.publish(user_ids, event)
            return
        if event.name == events.TYPING:
            subject = live_subject(event.chat_id, self._prefix)
            message = (subject, events.dumps(event.data), {H_EVENT: event.name})
            try:
                self._ephemeral.send_nowait(message)
            except trio.WouldBlock:
                self.ephemeral_dropped += 1
            return
        self.publisher.notify(event.chat_id, event.committed)

    def publish_to_user(self, user_id: int, event: Event) -> None:
        """An ephemeral event (``USER_EPHEMERAL``) for one user's streams on every node: this
        node's through the hub now, the others' as a core message on the user's subject
        (queued for ``serve_ephemeral``; full → dropped and counted). Never blocks."""
        self._hub.publish([user_id], event)
        subject = f"{self._prefix}.rt.user.{user_id}"
        headers = {H_EVENT: event.name, H_ORIGIN: self.origin}
        try:
            self._ephemeral.send_nowait((subject, events.dumps(event.data), headers))
        except trio.WouldBlock:
            self.ephemeral_dropped += 1

    async def serve_ephemeral(self) -> None:
        """Publish the queued typing events, in order, until cancelled. NATS unavailable →
        the event is lost (typing lapses by itself), logged once per outage."""
        failing = False
        async for subject, payload, headers in self._ephemeral_out:
            try:
                await self._bus.publish(subject, payload, headers)
            except Unavailable as exc:
                if not failing:
                    log.warning("typing not published (NATS: %s)", exc)
                failing = True
                continue
            failing = False

    @property
    def stream(self) -> str:
        """The JetStream stream of this node's events."""
        return self._stream

    @property
    def routing_tasks(self) -> int:
        """How many per-user routing tasks are running now (tests, metrics)."""
        return self._routing_tasks

    # -- the hub's routing --------------------------------------------------------------------
    async def user_arriving(self, user_id: int) -> None:
        """``UserRouting.user_arriving``: start the user's routing task (one per user, in the
        wiring's nursery, until ``user_gone``) and wait until their chats are positioned,
        at most ``ARRIVAL_TIMEOUT`` (then logged: the stream opens, the task keeps
        retrying NATS or PostgreSQL with backoff until it succeeds or the user goes)."""
        if self.closed:
            return
        arrival = self._arrivals.get(user_id)
        if arrival is None:
            arrival = self._arrivals[user_id] = _Arrival()
            # Registered first: a join noticed while the chats are read is applied.
            self.router.register(user_id)
            self._nursery.start_soon(self._route_user, user_id, arrival)
        with trio.move_on_after(ARRIVAL_TIMEOUT):
            await arrival.routed.wait()
        if not arrival.routed.is_set():
            log.warning(
                "routing of user %d took over %.0fs; opening anyway", user_id, ARRIVAL_TIMEOUT
            )

    async def stream_state(self) -> StreamState:
        """``UserRouting.stream_state``: one ``STREAM.INFO``; raises ``Unavailable``."""
        return await read_stream_state(self._bus, self._stream)

    async def replay(self, user_id: int, after_seq: int) -> Replay:
        """``UserRouting.replay``: the durable replay (``resume.DurableReplay``)."""
        return await self.durable.replay(user_id, after_seq)

    async def wait_routed(self, user_id: int) -> None:
        """Wait until an arriving user's chats are positioned (returns at once for a user
        not arriving here: nothing to wait for)."""
        arrival = self._arrivals.get(user_id)
        if arrival is not None:
            await arrival.routed.wait()

    def user_gone(self, user_id: int) -> None:
        """``UserRouting.user_gone``: stop the user's routing task and forget them (the
        unsubscribes run in the background)."""
        if self.closed:
            return
        arrival = self._arrivals.pop(user_id, None)
        if arrival is not None:
            arrival.gone = True
            arrival.scope.cancel()
        self.router.user_disconnected_nowait(user_id)

    async def _route_user(self, user_id: int, arrival: _Arrival) -> None:
        """Subscribe the user's notices, position their chats, then apply notices (buffered
        in the subscription meanwhile) until cancelled. Failures retry with backoff."""
        sub: Subscription | None = None
        self._routing_tasks += 1
        with arrival.scope:
            try:
                delay = RETRY_FIRST
                while True:
                    try:
                        if sub is None:
                            sub = await self._bus.subscribe(
                                f"{self._prefix}.rt.user.{user_id}", buffer=NOTICE_BUFFER
                            )
                        await self._position(user_id, arrival)
                        break
                    except Unavailable as exc:
                        log.warning("events of user %d not routed yet (%s); retrying", user_id, exc)
                        await trio.sleep(delay)
                        delay = min(RETRY_MAX, delay * 2)
                arrival.routed.set()
                sequencer = self.sequencer
                if sequencer is not None:  # release passes wait for this reader now
                    sequencer.watch(sub, user_id)
                async for item in sub:
                    if isinstance(item, Gap):
                        # A notice may be lost: re-read the user's chats (idempotent adds).
                        if self._bus.state is not BusState.CONNECTED:
                            # The connection was lost (the bus logged it): notices published
                            # until it is back are lost too, so re-read once it is.
                            await self._bus.wait_state(BusState.CONNECTED)
                        else:
                            log.warning("user %d: %d notices dropped", user_id, item.dropped)
                        await self._reposition(user_id, arrival)
                    else:
                        self._on_notice(user_id, item)
                    if sequencer is not None:
                        sequencer.progress()
            finally:
                if sub is not None and self.sequencer is not None:
                    self.sequencer.unwatch(sub)
                if sub is not None:
                    with (
                        trio.CancelScope(shield=True),
                        trio.move_on_after(2.0),
                        suppress(Unavailable),
                    ):
                        await self._bus.unsubscribe(sub)
                if self._arrivals.get(user_id) is arrival:
                    del self._arrivals[user_id]
                self._routing_tasks -= 1

    async def _reposition(self, user_id: int, arrival: _Arrival) -> None:
        """``_position`` after a Gap, retried with backoff until it succeeds (notices that
        come meanwhile wait in the subscription; a full one is one more Gap): a re-read
        given up would leave the joins of the lost notices unknown until reconnect."""
        delay = RETRY_FIRST
        while True:
            try:
                await self._position(user_id, arrival)
                return
            except Unavailable as exc:
                log.warning("user %d: chats not re-read yet (%s); retrying", user_id, exc)
                await trio.sleep(delay)
                delay = min(RETRY_MAX, delay * 2)

    async def _position(self, user_id: int, arrival: _Arrival) -> None:
        """The user's chats from storage → ``user_connected``; then read them again and drop
        the ones the user left meanwhile (a removal committed between the first read and the
        chat's position is before the position: no event would remove them). Raises
        ``Unavailable``.

        First a ``Bus.flush``: the notice subscription is live at the server before the
        storage read, so a join committed after the read sends a notice that reaches this
        node (the read sees every earlier one). Without it, a user with no chat yet could
        miss a join made in that instant, and with it the chat's events, until reconnect
        (docs/cluster.md "Built: event wiring", liveness of the notice subscription)."""
        await self._bus.flush()
        chat_ids = await self._store.user_chat_ids(user_id)
        if arrival.gone:  # user_gone ran while we waited: register nothing again
            return
        await self.router.user_connected(user_id, chat_ids)
        still = set(await self._store.user_chat_ids(user_id))
        if arrival.gone:
            return
        for chat_id in chat_ids:
            if chat_id not in still:
                await self.router.member_removed(chat_id, user_id)

    def _on_notice(self, user_id: int, message: Message) -> None:
        """Apply one message of the user's subject at once (no await: the release passes
        wait for this reader, and a join's bound must be set when its notice is taken)."""
        headers = message.headers or {}
        try:
            data = json.loads(message.payload)
            name = headers.get(H_EVENT, "")
            if name in USER_EPHEMERAL:  # another node's announcement (a core message)
                if headers.get(H_ORIGIN) != self.origin and isinstance(data, dict):
                    self._hub.publish([user_id], Event(name, data))
                return
            stream_seq = int(headers.get(H_STREAM_SEQ, "0"))
            if stream_seq and self.sequencer is not None:
                self.sequencer.seen(stream_seq)
            if is_workspace_event(name):  # a workspace event (issue 14): for this user
                event = routed(name, data, int(headers.get(H_SEQ, "0")), stream_seq)
                if self.sequencer is not None:
                    self.sequencer.push([user_id], event)
                else:
                    self._hub.publish([user_id], event)
                return
            if "left" in data:
                # A departure notice (C3, read by resumes): the router follows departures
                # from the chat's own events.
                return
            else:  # the publisher's join notice {"joined":"c","id":C,"event_seq":e}
                chat_id, event_seq = int(data["id"]), int(data["event_seq"])
                self.router.member_added_nowait(chat_id, user_id, event_seq, stream_seq)
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("user %d: unreadable notice on %s: %r", user_id, message.subject, exc)

    # -- chats created on this node -----------------------------------------------------------
    async def delete_workspace(self, workspace_id: int) -> list[int]:
        """Delete a workspace with its chats, each chat's ``chat.deleted`` in the outbox in
        the same transaction (``ClusterStore.delete_workspace``), then queue those chats for
        publishing (a full queue or a crash before it: the sweeper publishes them ≤ ~2 s
        later). Returns the chat ids; raises what storage raises (``Unavailable``)."""
        chat_ids = await self._store.delete_workspace(workspace_id)
        for chat_id in chat_ids:
            self.publisher.notify(chat_id)
        return chat_ids

    async def create_chat(
        self,
        workspace_id: int,
        kind: ChatType,
        name: str | None,
        description: str | None,
        owner_id: int,
        member_ids: Sequence[int],
    ) -> Chat:
        """``Chats``' cluster-mode creation: the chat and its ``chat.created`` (event 1,
        the owner's view, a join notice for each member) in one transaction
        (``ClusterStore.create_chat``), then the chat is queued for publishing (a full
        queue or a crash before it: the sweeper publishes it ≤ ~2 s later), waiting (see
        ``published``) for it to be stored. Each member's
        node subscribes on the notice and reads the chat from its first event. Returns the
        owner's view; raises what storage raises (``Conflict``, ``Unavailable``)."""
        view = await self._store.create_chat(
            workspace_id, kind, name, description, owner_id, member_ids
        )
        self.publisher.notify(view.id)
        await self.published(view.id)
        return view

    async def published(self, chat_id: int) -> None:
        """Return once the chat's events notified so far are stored in JetStream, at most
        ``PUBLISH_WAIT`` seconds, and at once while NATS is not connected (the outbox keeps
        them). The router calls it before answering a write of an actor here (and
        ``create_chat`` before its 201): one process publishes before it answers, so a
        stream opened after the answer starts after those events in both modes."""
        if self._bus.state is not BusState.CONNECTED:
            return
        with trio.move_on_after(PUBLISH_WAIT):
            await self.publisher.wait_notified(chat_id)


@asynccontextmanager
async def open_cluster_events(
    node: ClusterNode, hub: UserHub, directory: Directory, chat_router: ChatRouter, *, prefix: str
) -> AsyncIterator[ClusterEvents]:
    """Run the node's publisher and event router and wire them in for the block.

    Graceful stop, in order: the hub stops routing new users here; the notice readers and
    the router's subscriptions end (no more deliveries); the publisher gets ``DRAIN_TIMEOUT``
    seconds to publish what is queued, then stops (rows left are published by another node's
    sweeper). Actors still running keep writing to the outbox.
    """
    async with trio.open_nursery() as nursery:
        stream = stream_name(prefix)
        publisher = OutboxPublisher(node.store.storage, node.bus, prefix=prefix, stream=stream)
        await nursery.start(publisher.run)
        with trio.move_on_after(STREAM_READY_TIMEOUT):
            await publisher.ready.wait()
        if not publisher.ready.is_set():
            log.warning("the event stream is not ready yet; the publisher keeps trying")

        def resync(user_ids: list[int], chat_id: int, reason: str) -> None:
            hub.resync(user_ids, reason)

        async def members_of_chat(chat_id: int) -> set[int]:
            """After skipped events: the chat's members from storage (``chat_members``)."""
            return {m.user_id for m in await node.store.storage.list_chat_members(chat_id)}

        # Stored events reach users in stream order (docs/cluster.md §10).
        sequencer = Sequencer(
            node.bus, hub.publish, hub.resync, prefix=prefix, origin=secrets.token_hex(8)
        )
        async with (
            open_event_router(
                node.bus,
                sequencer.push,
                resync,
                prefix=prefix,
                stream=stream,
                members_of_chat=members_of_chat,
            ) as router,
            trio.open_nursery() as readers,
        ):
            wiring = ClusterEvents(
                store=node.store,
                bus=node.bus,
                hub=hub,
                publisher=publisher,
                router=router,
                nursery=readers,
                prefix=prefix,
                stream=stream,
            )
            presence = ClusterPresence(
                store=PresenceStore(node.store.storage, hub.config.presence_grace),
                node=node,
                bus=node.bus,
                hub=hub,
                prefix=prefix,
                origin=wiring.origin,
                max_chat_size=hub.config.presence_max_chat_size,
            )
            wiring.presence = presence
            router.sequencer = sequencer
            sequencer.bounds = router.bounds
            wiring.sequencer = sequencer
            await readers.start(sequencer.run)
            readers.start_soon(wiring.serve_ephemeral)
            await readers.start(presence.run)
            # Event ids become <E>-<S> (C3); E is read again at every stream's arrival.
            hub.incarnation = ""
            with trio.move_on_after(STREAM_READY_TIMEOUT), suppress(Unavailable):
                hub.incarnation = (await wiring.stream_state()).incarnation
            chat_router.outbox = True
            chat_router.published = wiring.published
            directory.sink = wiring
            hub.routing = wiring
            hub.presence = presence
            try:
                yield wiring
            finally:
                chat_router.published = None
                hub.routing = None
                hub.presence = None
                hub.incarnation = None
                wiring.closed = True
                readers.cancel_scope.cancel()
        with trio.CancelScope(shield=True), trio.move_on_after(DRAIN_TIMEOUT):
            await publisher.wait_idle()
        nursery.cancel_scope.cancel()
