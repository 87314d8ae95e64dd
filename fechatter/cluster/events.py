"""The ``EventRouter`` (docs/cluster.md §4, plan step B3): chat events from NATS to local users.

A node with streams subscribes only to the chats of its connected users (never a wildcard
over all chats), one core subscription per chat on ``<prefix>.rt.chat.<id>`` (the stream's
republish of ``<prefix>.ev.chat.<id>``). Each incoming event is checked against the chat's
``last_event_seq``: a repeat is dropped, the next one is delivered to the chat's local
members through the sink (``deliver(user_ids, Event)``, the ``UserHub.publish`` shape), and
a jump (or a ``Gap`` from the bus) starts a catch-up: later live events are held (bounded),
the missing range is read from JetStream (``Bus.read_stream``) and merged in order, then the
held events are released. Per member the router keeps the next ``event_seq`` it owes them,
so every user gets every event of a chat at most once and in ``event_seq`` order, also a
member added while events flow (§4 "Membership changes, race-free": subscribe first, take
the chat's position from the log, then read the log from the join point).

The wire format of one event (§4 lines 343-349 and 369-382), shared with the publisher
(B2): ``encode_event`` / ``decode_event`` below; the stream itself is ``StreamSpec``.
``fechatter.cluster.wiring`` runs one router per node.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import math
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Mapping, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import trio

from fechatter.bus.base import Bus, BusState, Gap, Message, Subscription
from fechatter.errors import Unavailable
from fechatter.events import CHAT_DELETED, MEMBER_ADDED, MEMBER_REMOVED, TYPING, Event

if TYPE_CHECKING:
    from fechatter.cluster.order import Sequencer

log = logging.getLogger(__name__)

# -- the wire format (§4) -------------------------------------------------------------------
STREAM = "FECHATTER_EVENTS"  # the stream's name (§4 line 369)
PREFIX = "fechatter"  # the ``nats_prefix`` setting's default (§6)
H_MSG_ID = "Nats-Msg-Id"  # c:<chat_id>:<event_seq> (JetStream dedupe, §4 line 348)
H_EVENT = "Fx-Event"  # the event name, e.g. message.created
H_SEQ = "Fx-Seq"  # the chat's event_seq (gapless per chat, commit order)
H_STREAM_SEQ = "Nats-Sequence"  # added by the stream's republish: the stream sequence (§4 378)
H_LAST_SEQ = "Nats-Last-Sequence"  # republish: the previous stream sequence on this subject
# The commit's wall-clock time (Unix seconds, µs), when the publisher knows it: only read to
# time the fan-out (``metrics.FanoutTimes``); absent or unreadable → unknown.
H_COMMITTED = "Fx-Committed"

MAX_AGE = 600.0  # seconds (§4 line 370: 10 min, twice SPEC's 5 min resume minimum)
MAX_BYTES = 1 << 30  # the ``stream_max_bytes`` setting's default (§4 line 370)
DUPLICATE_WINDOW = 30.0  # seconds (§4 line 371)

# -- the router's bounds (each with its full case, see EventRouter) ---------------------------
BUFFER = 1024  # messages per chat subscription (bus.Subscription; full → Gap → catch-up)
HOLD = 1024  # live events held per chat during a catch-up (full → resync)
READ_PAGE = 256  # messages per read_stream call
CATCH_UP_LIMIT = 10_000  # events one catch-up may read (above → resync; §5's cap)
RETRY_FIRST, RETRY_MAX = 0.1, 2.0  # seconds: backoff of a failed subscribe or log read


def stream_name(prefix: str = PREFIX) -> str:
    """The stream of a subject prefix: ``FECHATTER_EVENTS`` for the default one, so two
    deployments (or test runs) sharing a NATS server with different prefixes never share a
    stream (whose per-chat event_seq would collide: chat ids restart with a database)."""
    return f"{prefix.upper().replace('.', '_')}_EVENTS"


def chat_subject(chat_id: int, prefix: str = PREFIX) -> str:
    """The stored subject of a chat's events (the publisher's ``js_publish`` target)."""
    return f"{prefix}.ev.chat.{chat_id}"


def live_subject(chat_id: int, prefix: str = PREFIX) -> str:
    """The core subject the stream republishes a chat's stored events to (routers subscribe)."""
    return f"{prefix}.rt.chat.{chat_id}"


@dataclass(frozen=True, slots=True)
class StreamSpec:
    """§4's stream, the one definition both the publisher (``ensure_stream``) and the
    router's tests (``stream_config``, a raw ``STREAM.CREATE`` body) use. Seconds, bytes."""

    name: str = STREAM
    prefix: str = PREFIX
    max_age: float = MAX_AGE
    max_bytes: int = MAX_BYTES
    duplicate_window: float = DUPLICATE_WINDOW
    replicas: int = 1
    republish: bool = True

    @property
    def subjects(self) -> list[str]:
        return [f"{self.prefix}.ev.>"]

    @property
    def republish_pair(self) -> tuple[str, str] | None:
        """(source, destination) of the republish, None without it."""
        return (f"{self.prefix}.ev.>", f"{self.prefix}.rt.>") if self.republish else None


async def ensure_stream(bus: Bus, spec: StreamSpec) -> None:
    """Create the stream of ``spec`` or update it to ``spec`` (idempotent); raises
    ``Unavailable`` when NATS is. Replicas stay the server's default (1) for now: the bus
    has no parameter for them (docs/cluster.md §8, B2 "not built")."""
    await bus.ensure_stream(
        spec.name,
        spec.subjects,
        max_age=spec.max_age,
        max_msgs=-1,
        max_bytes=spec.max_bytes,
        duplicate_window=spec.duplicate_window,
        allow_direct=True,
        republish=spec.republish_pair,
    )


def stream_config(
    name: str = STREAM,
    prefix: str = PREFIX,
    *,
    max_age: float = MAX_AGE,
    max_bytes: int = MAX_BYTES,
    replicas: int = 1,
    republish: bool = True,
) -> dict[str, Any]:
    """The JetStream stream configuration of §4 (``StreamSpec``) as the JSON body of
    ``$JS.API.STREAM.CREATE.<name>`` / ``…UPDATE.<name>`` (durations in nanoseconds).

    ``republish=False`` only for tests that republish by hand to drop one event on purpose.
    """
    spec = StreamSpec(name, prefix, max_age, max_bytes, DUPLICATE_WINDOW, replicas, republish)
    config: dict[str, Any] = {
        "name": spec.name,
        "subjects": spec.subjects,
        "retention": "limits",
        "storage": "file",
        "max_age": int(spec.max_age * 1e9),
        "max_bytes": spec.max_bytes,
        "discard": "old",
        "duplicate_window": int(spec.duplicate_window * 1e9),
        "allow_direct": True,
        "num_replicas": spec.replicas,
    }
    pair = spec.republish_pair
    if pair is not None:
        config["republish"] = {"src": pair[0], "dest": pair[1]}
    return config


@dataclass(frozen=True, slots=True)
class OutgoingEvent:
    """One chat event ready for ``Bus.js_publish(subject, payload, msg_id, headers)``."""

    subject: str
    payload: bytes
    msg_id: str
    headers: Mapping[str, str]


def encode_event(
    chat_id: int, event_seq: int, name: str, payload: bytes, prefix: str = PREFIX
) -> OutgoingEvent:
    """The message the publisher stores for outbox row ``(c, chat_id, event_seq)``.

    ``payload``: the row's ``data`` as JSON bytes (``events.dumps`` of the payload).
    Subject ``<prefix>.ev.chat.<chat_id>``, ``Nats-Msg-Id: c:<chat_id>:<event_seq>`` (passed
    as ``msg_id``; the bus adds the header), ``Fx-Event: <name>``, ``Fx-Seq: <event_seq>``.
    """
    return OutgoingEvent(
        chat_subject(chat_id, prefix),
        payload,
        f"c:{chat_id}:{event_seq}",
        {H_EVENT: name, H_SEQ: str(event_seq)},
    )


class BadEvent(ValueError):
    """A message on a chat subject that is not an event of this format (logged, skipped)."""


@dataclass(frozen=True, slots=True)
class WireEvent:
    """A decoded chat event: ``stream_seq`` is 0 for an ephemeral one (no ``Nats-Sequence``)
    and ``event_seq`` 0 for one without ``Fx-Seq`` (ephemeral, never replayed)."""

    chat_id: int
    event_seq: int
    stream_seq: int
    name: str
    data: dict[str, Any]
    committed: float = 0.0  # ``Fx-Committed`` (0.0: unknown)


def decode_event(
    subject: str, payload: bytes, headers: Mapping[str, str] | None, stream_seq: int = 0
) -> WireEvent:
    """Decode a live (republished) or stored message of a chat subject.

    The chat id is the subject's last token; ``stream_seq`` is taken from ``Nats-Sequence``
    when present (live), else the given one (a stored message's own sequence).
    Raises ``BadEvent`` for a missing ``Fx-Event``, a non-integer header or token, or a
    payload that is not a JSON object.
    """
    hdrs = headers or {}
    try:
        chat_id = int(subject.rsplit(".", 1)[-1])
        name = hdrs[H_EVENT]
        event_seq = int(hdrs.get(H_SEQ, "0"))
        stream_seq = int(hdrs.get(H_STREAM_SEQ, stream_seq))
        data = json.loads(payload)
    except (KeyError, ValueError) as exc:
        raise BadEvent(f"not a chat event on {subject}: {exc!r}") from exc
    if not isinstance(data, dict):
        raise BadEvent(f"not a chat event on {subject}: payload is not an object")
    committed = hdrs.get(H_COMMITTED)
    return WireEvent(
        chat_id, event_seq, stream_seq, name, data, _seconds(committed) if committed else 0.0
    )


def _seconds(text: str) -> float:
    """A header's Unix time, 0.0 if unreadable (it only times the fan-out)."""
    try:
        value = float(text)
    except ValueError:
        return 0.0
    return value if math.isfinite(value) and value > 0 else 0.0


class RoutedEvent(Event):
    """The ``Event`` handed to the sink, with its place in the chat and in the stream
    (``stream_seq`` is the future event id's ``S``, §5; the sink stamps its own id today)."""

    __slots__ = ("event_seq", "stream_seq")

    def __init__(self, wire: WireEvent) -> None:
        super().__init__(wire.name, wire.data, wire.chat_id)
        self.event_seq = wire.event_seq
        self.stream_seq = wire.stream_seq
        self.committed = wire.committed


Deliver = Callable[[list[int], Event], None]
"""``deliver(user_ids, event)``: hand ``event`` to those local users; must not block."""
Resync = Callable[[list[int], int, str], None]
"""``resync(user_ids, chat_id, reason)``: those users' streams must get ``resync``."""
MembersOf = Callable[[int], Awaitable[Collection[int]]]
"""``members_of_chat(chat_id)``: the chat's member user ids from the source of truth
(storage ``chat_members``; empty for a deleted chat); raises ``Unavailable`` (retried)."""


# -- the router --------------------------------------------------------------------------
@dataclass
class RouterStatistics:
    delivered: int = 0  # events handed to the sink (one per event, not per user)
    duplicates: int = 0  # live or read events dropped as already processed
    gaps: int = 0  # catch-ups started by a jump in event_seq or a bus Gap
    catch_ups: int = 0  # catch-ups run (gaps and late members)
    read: int = 0  # events read from the log
    held_max: int = 0  # most live events held at once by one chat
    resyncs: int = 0  # resync calls (overflow or history unavailable)
    bad: int = 0  # undecodable messages skipped


@dataclass(eq=False)
class _Chat:
    chat_id: int
    members: dict[int, int] = field(default_factory=dict)  # user → next event_seq owed (0: any)
    sub: Subscription | None = None
    ready: trio.Event = field(default_factory=trio.Event)  # subscribed and positioned
    closed: bool = False
    last_event_seq: int = 0  # highest event processed in order
    last_stream_seq: int = 0  # its stream sequence
    read_from: float = math.inf  # stream sequence a catch-up must (re)read from
    held: dict[int, WireEvent] = field(default_factory=dict)  # event_seq → live event
    catching_up: bool = False
    scope: trio.CancelScope | None = None  # the running catch-up's
    stale: bool = False  # events were skipped: re-read the membership before delivering
    reading: float = math.inf  # stream sequence the running log read continues from
    watched_at: int = -1  # the sequencer's pass when the subscription was watched


class EventRouter:
    """The node-local index user → chats and one subscription per chat with a local user.

    Build it with ``open_event_router``. All methods run on trio; the index changes at once
    (synchronously), the subscriptions follow (awaited). Bounds and full cases:
    - a chat's subscription holds ``buffer`` messages; full → the bus inserts a ``Gap``,
      which starts a catch-up from the last processed stream sequence (no loss);
    - during a catch-up at most ``hold`` live events wait per chat; one more → the chat's
      local members get ``resync(users, chat, "history_unavailable")`` (the client contract's
      reason: the server cannot prove the history; the log line says overflow), the held
      events are dropped,
      the catch-up is abandoned and the chat continues after the newest live event;
    - one catch-up reads at most ``catch_up_limit`` events (``read_page`` per call); more →
      ``resync(…, "history_unavailable")`` as for an event evicted from the stream (a hole
      in the log), and the chat continues after the newest event seen (nothing held: after
      the log's newest event, read with one message get);
    - after any skip (hold overflow, evicted events, the catch-up limit) the skipped events
      may have changed the membership: with ``members_of_chat``, the chat's local members
      are re-read from it (live events held meanwhile) and the ones no longer members are
      dropped before anything more is delivered (joins come as notices, ``member_added``).
    """

    def __init__(
        self,
        bus: Bus,
        nursery: trio.Nursery,
        deliver: Deliver,
        resync: Resync,
        *,
        prefix: str = PREFIX,
        stream: str = STREAM,
        buffer: int = BUFFER,
        hold: int = HOLD,
        read_page: int = READ_PAGE,
        catch_up_limit: int = CATCH_UP_LIMIT,
        members_of_chat: MembersOf | None = None,
    ) -> None:
        self._bus = bus
        self._nursery = nursery
        self._deliver = deliver
        self._resync = resync
        self._prefix = prefix
        self._stream = stream
        self._buffer = buffer
        self._hold = hold
        self._read_page = read_page
        self._catch_up_limit = catch_up_limit
        self._members_of = members_of_chat
        self._chats: dict[int, _Chat] = {}
        self._users: dict[int, set[int]] = {}  # connected user → their chats
        self._closed = False
        # Cluster wiring (docs/cluster.md §10): the node's release in stream order; the
        # chats that may still deliver events older than other chats' (see ``bounds``).
        self.sequencer: Sequencer | None = None
        self._unsettled: set[_Chat] = set()
        self.stats = RouterStatistics()

    # -- read-only views -------------------------------------------------------------------
    @property
    def subscriptions(self) -> Mapping[int, str]:
        """chat id → live subject, for every chat subscribed right now (a snapshot)."""
        return MappingProxyType(
            {c.chat_id: c.sub.subject for c in self._chats.values() if c.sub is not None}
        )

    def chats_of(self, user_id: int) -> frozenset[int]:
        """The chats the router follows for a connected user."""
        return frozenset(self._users.get(user_id, ()))

    def members_of(self, chat_id: int) -> frozenset[int]:
        """The local members of a chat the router delivers to."""
        chat = self._chats.get(chat_id)
        return frozenset(chat.members) if chat else frozenset()

    def bounds(self, pass_no: int) -> dict[int, float]:
        """The ``Sequencer``'s bounds: user → the lowest stream sequence one of their chats
        may still deliver to them (a catch-up's read position, the first stream sequence
        after the chat's last event in order); 0 while a chat is not positioned or its
        subscription was not yet covered by the release pass ``pass_no``. Chats found
        settled leave the set scanned, so this costs the unsettled chats' members only."""
        out: dict[int, float] = {}
        for chat in list(self._unsettled):
            if chat.closed:
                self._unsettled.discard(chat)
                continue
            if not chat.ready.is_set() or chat.watched_at >= pass_no:
                bound = 0.0
            elif chat.catching_up or chat.read_from != math.inf or chat.held:
                bound = min(chat.read_from, chat.reading, chat.last_stream_seq + 1)
            else:
                self._unsettled.discard(chat)
                continue
            for user_id in chat.members:
                if bound < out.get(user_id, math.inf):
                    out[user_id] = bound
        return out

    def _unsettle(self, chat: _Chat) -> None:
        if self.sequencer is not None:
            self._unsettled.add(chat)

    def _settled(self) -> None:
        if self.sequencer is not None:
            self.sequencer.settled()

    # -- the index -------------------------------------------------------------------------
    def register(self, user_id: int) -> None:
        """``user_id`` is arriving (no chats yet): from now on ``member_added`` for them is
        applied, so a join noticed before their chats are read is not lost."""
        if not self._closed:
            self._users.setdefault(user_id, set())

    async def user_connected(self, user_id: int, chat_ids: Sequence[int]) -> None:
        """``user_id`` has a stream here and is a member of ``chat_ids``: deliver their
        events from now on. Returns once each chat's subscription is live and positioned
        (while NATS is unavailable it keeps retrying: callers bound it)."""
        chats = self._users.setdefault(user_id, set())
        waiting = []
        for chat_id in chat_ids:
            chats.add(chat_id)
            chat = self._chat(chat_id)
            chat.members.setdefault(user_id, chat.last_event_seq + 1 if chat.ready.is_set() else 0)
            waiting.append(chat)
        for chat in waiting:
            await chat.ready.wait()

    async def user_disconnected(self, user_id: int) -> None:
        """The user's last local stream is gone: forget them; unsubscribe from each chat
        they leave without local members (awaited)."""
        for chat_id in self._users.pop(user_id, set()):
            chat = self._chats.get(chat_id)
            if chat is not None:
                chat.members.pop(user_id, None)
                if not chat.members:
                    await self._drop(chat)

    def user_disconnected_nowait(self, user_id: int) -> None:
        """``user_disconnected`` without waiting: the index forgets the user at once, the
        unsubscribes run in the router's nursery (for callers that cannot await, e.g. a
        UserActor's cleanup). A no-op after ``aclose``."""
        if self._closed:
            return
        for chat_id in self._users.pop(user_id, set()):
            chat = self._chats.get(chat_id)
            if chat is not None:
                chat.members.pop(user_id, None)
                if not chat.members and not chat.closed:
                    self._nursery.start_soon(self._unsubscribe, self._close(chat))

    async def member_added(
        self,
        chat_id: int,
        user_id: int,
        joined_event_seq: int | None = None,
        after_stream_seq: int = 0,
    ) -> None:
        """Connected user ``user_id`` joined ``chat_id`` with the event ``joined_event_seq``
        (their ``chat.member_added``): deliver them every event of the chat from that one on,
        exactly once, in order — also the ones stored before this call (read from the log,
        from ``after_stream_seq + 1``: a stream sequence before the join, e.g. the notice's,
        or 0 to scan the chat's retained events). ``None``: from the next event on.

        Subscribes first if the chat had no local member (§4: subscribe, position, read).
        A user not connected here is ignored. Returns once the chat is subscribed.
        """
        chat = self.member_added_nowait(chat_id, user_id, joined_event_seq, after_stream_seq)
        if chat is not None:
            await chat.ready.wait()

    def member_added_nowait(
        self,
        chat_id: int,
        user_id: int,
        joined_event_seq: int | None = None,
        after_stream_seq: int = 0,
    ) -> _Chat | None:
        """``member_added`` without waiting for the subscription (for a notice reader that
        must not stall: the index, the catch-up and the user's bound change at once).
        Returns the chat (None: the user is not connected here)."""
        if user_id not in self._users:
            return None
        self._users[user_id].add(chat_id)
        chat = self._chat(chat_id)
        if user_id in chat.members:
            return chat
        if joined_event_seq is None:
            chat.members[user_id] = chat.last_event_seq + 1 if chat.ready.is_set() else 0
        else:
            chat.members[user_id] = max(1, joined_event_seq)
            if not chat.ready.is_set() or joined_event_seq <= chat.last_event_seq:
                self._catch_up(chat, after_stream_seq + 1, gap=False)
        return chat

    async def member_removed(self, chat_id: int, user_id: int) -> None:
        """``user_id`` left ``chat_id``: deliver them nothing more of it; unsubscribe when no
        local member is left (awaited). Events apply this themselves (``member_removed``
        after delivering it to the removed user, ``chat.deleted``), so a call is idempotent."""
        chats = self._users.get(user_id)
        if chats is not None:
            chats.discard(chat_id)
        chat = self._chats.get(chat_id)
        if chat is not None and chat.members.pop(user_id, None) is not None and not chat.members:
            await self._drop(chat)

    def _chat(self, chat_id: int) -> _Chat:
        chat = self._chats.get(chat_id)
        if chat is None:
            chat = self._chats[chat_id] = _Chat(chat_id)
            self._unsettle(chat)
            self._nursery.start_soon(self._run, chat)
        return chat

    def _close(self, chat: _Chat) -> Subscription | None:
        """Take ``chat`` out of the index at once; returns its subscription to end."""
        if self._chats.get(chat.chat_id) is chat:
            del self._chats[chat.chat_id]
        chat.closed = True
        if chat.scope is not None:
            chat.scope.cancel()
        sub, chat.sub = chat.sub, None
        if sub is not None and self.sequencer is not None:
            self.sequencer.unwatch(sub)
        self._settled()
        return sub

    async def _unsubscribe(self, sub: Subscription | None) -> None:
        if sub is not None:
            with suppress(Unavailable):  # closed locally all the same; the server drops it
                await self._bus.unsubscribe(sub)  # ends the chat's reader task

    async def _drop(self, chat: _Chat) -> None:
        await self._unsubscribe(self._close(chat))

    def _forget(self, chat: _Chat, user_id: int) -> None:
        """Synchronous removal (from an event): the unsubscribe runs in the background."""
        chat.members.pop(user_id, None)
        chats = self._users.get(user_id)
        if chats is not None:
            chats.discard(chat.chat_id)
        if not chat.members and not chat.closed:
            self._nursery.start_soon(self._unsubscribe, self._close(chat))

    # -- one chat's task -------------------------------------------------------------------
    async def _run(self, chat: _Chat) -> None:
        """Subscribe, take the chat's position from the log, then process live messages
        until the subscription ends (``_drop``)."""
        delay = RETRY_FIRST
        while not chat.closed:
            try:
                sub = await self._bus.subscribe(
                    live_subject(chat.chat_id, self._prefix), buffer=self._buffer
                )
            except Unavailable as exc:
                log.warning("subscribe to chat %d failed (%s); retrying", chat.chat_id, exc)
                await trio.sleep(delay)
                delay = min(RETRY_MAX, delay * 2)
                continue
            if chat.closed:
                with suppress(Unavailable):
                    await self._bus.unsubscribe(sub)
                return
            chat.sub = sub
            break
        else:
            return
        # The reply proves the SUB is live (the server handles a connection's operations in
        # order), so every event stored after the position read arrives on ``sub`` (§4 R5).
        delay = RETRY_FIRST
        while not chat.closed:
            try:
                chat.last_event_seq, chat.last_stream_seq = await self._last_stored(chat.chat_id)
                break
            except Unavailable as exc:
                log.warning("position of chat %d unknown (%s); retrying", chat.chat_id, exc)
                await trio.sleep(delay)
                delay = min(RETRY_MAX, delay * 2)
        for user_id, owed in chat.members.items():
            if owed == 0:
                chat.members[user_id] = chat.last_event_seq + 1
        sequencer = self.sequencer
        if sequencer is not None:
            # From the next release pass on, the passes wait for this reader.
            sequencer.watch(sub)
            chat.watched_at = sequencer.passes
        chat.ready.set()
        self._settled()
        if chat.read_from != math.inf:  # a member joined before this position
            self._catch_up(chat, int(chat.read_from), gap=False)
        async for item in sub:
            if chat.closed:
                break
            if isinstance(item, Gap):
                log.info("chat %d: %d live events dropped", chat.chat_id, item.dropped)
                self._catch_up(chat, chat.last_stream_seq + 1, gap=True)
            else:
                self._on_live(chat, item)
            if sequencer is not None:
                sequencer.progress()

    def _on_live(self, chat: _Chat, message: Message) -> None:
        try:
            wire = decode_event(message.subject, message.payload, message.headers)
        except BadEvent as exc:
            self.stats.bad += 1
            log.warning("%s", exc)
            return
        if wire.stream_seq and self.sequencer is not None:
            self.sequencer.seen(wire.stream_seq)
        if wire.event_seq == 0:  # ephemeral (typing): no order, no replay (§4 line 398)
            # Typing goes to the chat's local members but the typist (SPEC §6 "other
            # members online"), as the owner's actor addresses it in one process.
            typist = wire.data.get("user_id") if wire.name == TYPING else None
            recipients = [u for u in chat.members if u != typist]
            if recipients:
                self._deliver(recipients, RoutedEvent(wire))
            return
        if chat.catching_up:
            if wire.event_seq <= chat.last_event_seq:
                self.stats.duplicates += 1
            elif wire.event_seq not in chat.held:
                if len(chat.held) >= self._hold:
                    self._overflow(chat, wire)
                    return
                chat.held[wire.event_seq] = wire
                self.stats.held_max = max(self.stats.held_max, len(chat.held))
            return
        if wire.event_seq <= chat.last_event_seq:
            self.stats.duplicates += 1
        elif wire.event_seq == chat.last_event_seq + 1:
            self._process(chat, wire)
        else:
            chat.held[wire.event_seq] = wire
            self._catch_up(chat, chat.last_stream_seq + 1, gap=True)

    def _process(self, chat: _Chat, wire: WireEvent) -> None:
        """Deliver ``wire`` to each member owed it; advance the chat; apply its index effect."""
        new = wire.event_seq > chat.last_event_seq
        if wire.name == MEMBER_ADDED and new:  # a connected user joins with this event
            for user_id in wire.data.get("user_ids", ()):
                if user_id in self._users and user_id not in chat.members:
                    chat.members[user_id] = wire.event_seq
                    self._users[user_id].add(chat.chat_id)
        recipients = [u for u, owed in chat.members.items() if owed <= wire.event_seq]
        if not recipients and not new:
            self.stats.duplicates += 1
            return
        if recipients:
            for user_id in recipients:
                chat.members[user_id] = wire.event_seq + 1
            self._deliver(recipients, RoutedEvent(wire))
            self.stats.delivered += 1
        if new:
            chat.last_event_seq, chat.last_stream_seq = wire.event_seq, wire.stream_seq
        # The index follows the event (§4 lines 395-397), after delivering it.
        if wire.name == MEMBER_REMOVED and (new or wire.data.get("user_id") in recipients):
            removed = wire.data.get("user_id")
            if isinstance(removed, int) and removed in chat.members:
                self._forget(chat, removed)
        elif wire.name == CHAT_DELETED and new:
            for user_id in list(chat.members):
                self._forget(chat, user_id)

    def _overflow(self, chat: _Chat, newest: WireEvent) -> None:
        """Hold full: resync the chat's local users and continue after ``newest``."""
        self.stats.resyncs += 1
        users = list(chat.members)
        log.warning(
            "chat %d: %d events held during a catch-up; resync for %d users",
            chat.chat_id,
            len(chat.held),
            len(users),
        )
        if chat.scope is not None:
            chat.scope.cancel()
        chat.catching_up = False
        chat.held.clear()
        chat.read_from = math.inf
        chat.last_event_seq, chat.last_stream_seq = newest.event_seq, newest.stream_seq
        for user_id in users:
            chat.members[user_id] = newest.event_seq + 1
        self._resync(users, chat.chat_id, "history_unavailable")
        if self._members_of is not None:  # the skipped events may have changed the members
            chat.stale = True
            self._start_catch_up(chat)
        self._settled()

    # -- catch-up: read the log, merge with the held events, release ------------------------
    def _catch_up(self, chat: _Chat, from_stream_seq: int, *, gap: bool) -> None:
        """Make sure a catch-up runs that reads the log from ``from_stream_seq`` on."""
        if gap:
            self.stats.gaps += 1
        chat.read_from = min(chat.read_from, max(1, from_stream_seq))
        self._start_catch_up(chat)

    def _start_catch_up(self, chat: _Chat) -> None:
        """Start the chat's catch-up task (live events held while it runs) unless one runs."""
        self._unsettle(chat)
        if chat.catching_up or not chat.ready.is_set() or chat.closed:
            return  # the running one (or the start, after positioning) picks it up
        chat.catching_up = True
        self.stats.catch_ups += 1
        chat.scope = trio.CancelScope()  # set now: an overflow may cancel it before it starts
        self._nursery.start_soon(self._run_catch_up, chat, chat.scope)

    async def _run_catch_up(self, chat: _Chat, scope: trio.CancelScope) -> None:
        with scope:
            try:
                await self._read_and_merge(chat)
            finally:
                chat.reading = math.inf
                if chat.scope is scope:
                    chat.scope = None
                    chat.catching_up = False
                self._settled()

    async def _read_and_merge(self, chat: _Chat) -> None:
        subject = chat_subject(chat.chat_id, self._prefix)
        budget = self._catch_up_limit
        delay = RETRY_FIRST
        if chat.stale:  # an overflow skipped events: membership first, then what is held
            await self._refresh(chat)
            self._release(chat)
            if chat.held:
                chat.read_from = min(chat.read_from, chat.last_stream_seq + 1)
        while chat.read_from != math.inf and not chat.closed:
            position, chat.read_from = int(chat.read_from), math.inf
            chat.reading = position
            progressed = False
            while budget > 0:  # read [position, end of log] page by page
                try:
                    page = await self._bus.read_stream(
                        self._stream, subject, position, min(self._read_page, budget)
                    )
                except Unavailable as exc:
                    if self._bus.state is not BusState.CONNECTED:
                        # A lost connection (its Gap started this catch-up; the bus logged
                        # it): read as soon as it is back.
                        await self._bus.wait_state(BusState.CONNECTED)
                        continue
                    log.warning("reading chat %d from the log failed (%s)", chat.chat_id, exc)
                    await trio.sleep(delay)
                    delay = min(RETRY_MAX, delay * 2)
                    continue
                for stored in page:
                    position = chat.reading = stored.seq + 1
                    budget -= 1
                    try:
                        wire = decode_event(
                            stored.subject, stored.payload, stored.headers, stored.seq
                        )
                    except BadEvent as exc:
                        self.stats.bad += 1
                        log.warning("%s", exc)
                        continue
                    self.stats.read += 1
                    chat.held.pop(wire.event_seq, None)
                    # Members owed an earlier event than the oldest one left: evicted.
                    owed = [u for u, o in chat.members.items() if 0 < o < wire.event_seq]
                    if owed:
                        self._hole(chat, owed, wire.event_seq - 1)
                        await self._refresh(chat)
                    self._process(chat, wire)
                    progressed = True
                if len(page) < min(self._read_page, budget + len(page)):
                    break
            if budget <= 0:  # bounded work: give up on what is left
                chat.read_from = math.inf
                if chat.held:
                    self._hole(chat, list(chat.members), min(chat.held) - 1)
                else:  # nothing live to continue from: continue after the log's newest
                    await self._skip_to_end(chat)
                await self._refresh(chat)
            self._release(chat)
            if chat.held and chat.read_from == math.inf:
                if progressed:  # a held event was stored after the read passed: read again
                    chat.read_from = chat.last_stream_seq + 1
                else:  # the missing events are not in the log (evicted)
                    self._hole(chat, list(chat.members), min(chat.held) - 1)
                    await self._refresh(chat)
                    self._release(chat)
                    if chat.held:
                        chat.read_from = chat.last_stream_seq + 1

    def _release(self, chat: _Chat) -> None:
        """Deliver the held events that follow the chat's last one in order."""
        for event_seq in sorted(chat.held):
            if event_seq <= chat.last_event_seq:
                del chat.held[event_seq]
                self.stats.duplicates += 1
            elif event_seq == chat.last_event_seq + 1:
                self._process(chat, chat.held.pop(event_seq))
            else:
                return

    def _hole(self, chat: _Chat, users: list[int], through: int) -> None:
        """Events up to ``through`` are not in the log (evicted, or past the catch-up limit):
        ``users`` get ``resync(…, "history_unavailable")``; the chat continues after it."""
        self.stats.resyncs += 1
        log.warning("chat %d: events up to %d unavailable; resync", chat.chat_id, through)
        if through > chat.last_event_seq:
            chat.last_event_seq = through  # its stream sequence stays: the re-read starts there
        for user_id in users:
            chat.members[user_id] = max(chat.members[user_id], through + 1)
        self._resync(users, chat.chat_id, "history_unavailable")
        if self._members_of is not None:
            chat.stale = True

    async def _skip_to_end(self, chat: _Chat) -> None:
        """The catch-up limit was reached with no live event held: the members still owed an
        event up to the log's newest one get a resync and continue after it."""
        delay = RETRY_FIRST
        while not chat.closed:
            try:
                event_seq, stream_seq = await self._last_stored(chat.chat_id)
                break
            except Unavailable as exc:
                log.warning("position of chat %d unknown (%s); retrying", chat.chat_id, exc)
                await trio.sleep(delay)
                delay = min(RETRY_MAX, delay * 2)
        else:
            return
        behind = [u for u, owed in chat.members.items() if 0 < owed <= event_seq]
        if behind:
            self._hole(chat, behind, event_seq)
        if event_seq >= chat.last_event_seq:
            chat.last_stream_seq = max(chat.last_stream_seq, stream_seq)

    async def _refresh(self, chat: _Chat) -> None:
        """After a skip (``chat.stale``): re-read the chat's members from ``members_of_chat``
        (retried while unavailable) and forget the local members no longer in it."""
        delay = RETRY_FIRST
        while chat.stale and self._members_of is not None and not chat.closed:
            try:
                members = await self._members_of(chat.chat_id)
            except Unavailable as exc:
                log.warning("members of chat %d unknown (%s); retrying", chat.chat_id, exc)
                await trio.sleep(delay)
                delay = min(RETRY_MAX, delay * 2)
                continue
            chat.stale = False
            gone = [u for u in chat.members if u not in members]
            if gone:
                log.info("chat %d: %d local users left during a skip", chat.chat_id, len(gone))
            for user_id in gone:
                self._forget(chat, user_id)

    async def _last_stored(self, chat_id: int) -> tuple[int, int]:
        """(event_seq, stream_seq) of the chat's newest stored event, (0, 0) for none.

        One ``$JS.API.STREAM.MSG.GET`` request (``last_by_subj``) on the bus's connection,
        so its reply also confirms that subscriptions made before it are live.
        """
        body = json.dumps({"last_by_subj": chat_subject(chat_id, self._prefix)}).encode()
        reply = await self._bus.request(f"$JS.API.STREAM.MSG.GET.{self._stream}", body, 5.0)
        try:
            answer = json.loads(reply.payload)
            if "error" in answer:
                if answer["error"].get("err_code") == 10037:  # no message: an empty chat
                    return 0, 0
                raise Unavailable(f"JetStream: {answer['error'].get('description')}")
            stored = answer["message"]
            headers = _parse_headers(base64.b64decode(stored.get("hdrs") or b""))
            return int(headers.get(H_SEQ, "0")), int(stored["seq"])
        except (ValueError, KeyError, TypeError, binascii.Error) as exc:
            raise Unavailable(f"JetStream: unreadable message get reply: {exc!r}") from exc

    async def aclose(self) -> None:
        """Unsubscribe from every chat (the reader tasks end)."""
        self._closed = True
        for chat in list(self._chats.values()):
            await self._drop(chat)
        self._users.clear()


def _parse_headers(raw: bytes) -> dict[str, str]:
    """NATS headers (``NATS/1.0\\r\\nKey: Value\\r\\n…\\r\\n\\r\\n``) as a dict."""
    out: dict[str, str] = {}
    for line in raw.decode("utf-8", "replace").split("\r\n")[1:]:
        key, sep, value = line.partition(":")
        if sep:
            out[key.strip()] = value.strip()
    return out


@asynccontextmanager
async def open_event_router(
    bus: Bus, deliver: Deliver, resync: Resync, **options: Any
) -> AsyncIterator[EventRouter]:
    """An ``EventRouter`` on ``bus`` with its tasks in a nursery of its own; on exit it
    unsubscribes from every chat (shielded) and its tasks end. ``options``: the keyword
    arguments of ``EventRouter`` (prefix, stream, buffer, hold, read_page, catch_up_limit,
    members_of_chat)."""
    async with trio.open_nursery() as nursery:
        router = EventRouter(bus, nursery, deliver, resync, **options)
        try:
            yield router
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(5.0):
                await router.aclose()
            nursery.cancel_scope.cancel()
