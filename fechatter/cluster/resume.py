"""Resume across nodes (docs/cluster.md §5, plan step C3): event ids ``<E>-<S>``.

``S`` is the JetStream stream sequence of an event, ``E`` the stream's incarnation (base 36
of its creation time in nanoseconds, from ``STREAM.INFO``): both are the same on every node,
so an id given by one node can be resumed from on any other. ``read_stream_state`` reads
them; ``DurableReplay`` reads one user's events after a resume point from the stream when
the node's own replay ring cannot prove them.

What a user's events after ``S`` are: the events of their chats, found by reading their
notice subject ``<prefix>.ev.user.<uid>`` first — join notices (from ``event_seq`` m on),
departure notices (up to and including ``event_seq`` l: the removed user's
``chat.member_removed``, or ``chat.deleted``; a new chat's members get a join notice at its
``chat.created``, event 1) — plus the chats they are a member of now (from storage). Each
chat's events are kept while the user was a member.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime

import trio

from fechatter.actors.ports import Replay, StreamState
from fechatter.bus.base import Bus, StoredMessage
from fechatter.cluster.events import (
    H_EVENT,
    H_SEQ,
    BadEvent,
    RoutedEvent,
    chat_subject,
    decode_event,
)
from fechatter.cluster.workspace_events import is_workspace_event, routed
from fechatter.errors import Unavailable
from fechatter.events import Event

log = logging.getLogger(__name__)

REPLAY_LIMIT = 10_000  # events one durable replay may read (above → resync; §5)
REPLAYS_AT_ONCE = 16  # durable replays running at once per node (others wait their turn)
SUBJECTS_PER_READ = 500  # subjects per ephemeral consumer (more: several, merged by sequence)
READ_PAGE = 1000  # messages per read

_DIGITS = "0123456789abcdefghijklmnopqrstuvwxyz"


def base36(value: int) -> str:
    """``value`` (≥ 0) in base 36, lower case."""
    out = ""
    while True:
        value, digit = divmod(value, 36)
        out = _DIGITS[digit] + out
        if not value:
            return out


def incarnation(created: str) -> str:
    """The ``E`` of event ids: base 36 of the stream's creation time (RFC 3339 from
    ``STREAM.INFO``, nanoseconds kept). Raises ``ValueError`` for another format."""
    text = created.strip()
    if text.endswith("Z"):
        text = text[:-1]
    main, _, fraction = text.partition(".")
    moment = datetime.fromisoformat(main).replace(tzinfo=UTC)
    digits = (fraction + "000000000")[:9]
    if not digits.isdigit():
        raise ValueError(f"not a creation time: {created!r}")
    return base36(int(moment.timestamp()) * 1_000_000_000 + int(digits))


async def read_stream_state(bus: Bus, stream: str) -> StreamState:
    """One ``$JS.API.STREAM.INFO`` request. Raises ``Unavailable`` (NATS down, no stream,
    an unreadable answer)."""
    reply = await bus.request(f"$JS.API.STREAM.INFO.{stream}", b"", 5.0)
    try:
        answer = json.loads(reply.payload)
        if "error" in answer:
            raise Unavailable(f"JetStream: {answer['error'].get('description')}")
        state = answer["state"]
        return StreamState(
            incarnation(str(answer["created"])), int(state["first_seq"]), int(state["last_seq"])
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise Unavailable(f"JetStream: unreadable stream info: {exc!r}") from exc


class _TooMany(Exception):
    """More than the replay limit matched."""


class DurableReplay:
    """A node's durable replays: at most ``at_once`` at a time (the others wait), each
    reading at most ``limit`` events (more → ``Replay(resync="history_unavailable")``)."""

    def __init__(
        self,
        bus: Bus,
        user_chats: Callable[[int], Awaitable[Sequence[int]]],
        *,
        prefix: str,
        stream: str,
        limit: int = REPLAY_LIMIT,
        at_once: int = REPLAYS_AT_ONCE,
    ) -> None:
        self._bus = bus
        self._user_chats = user_chats
        self._prefix = prefix
        self._stream = stream
        self.limit = limit  # public: tests lower it
        self._slots = trio.Semaphore(at_once)
        self.running = 0  # replays reading now (tests, metrics)
        self.waiting = 0  # replays waiting for a slot

    async def replay(self, user_id: int, after: int) -> Replay:
        """``user_id``'s events with stream sequence > ``after`` (see the module doc).
        Raises ``Unavailable``."""
        self.waiting += 1
        try:
            await self._slots.acquire()
        finally:
            self.waiting -= 1
        self.running += 1
        try:
            return await self._replay(user_id, after)
        finally:
            self.running -= 1
            self._slots.release()

    async def _replay(self, user_id: int, after: int) -> Replay:
        start = await read_stream_state(self._bus, self._stream)
        budget = [self.limit]
        try:
            notices = await self._read([f"{self._prefix}.ev.user.{user_id}"], after, budget)
            current = set(await self._user_chats(user_id))
            out: list[Event] = []
            spans = _spans(notices, current, out)
            subjects = [chat_subject(c, self._prefix) for c in sorted(spans)]
            stored: list[StoredMessage] = []
            for i in range(0, len(subjects), SUBJECTS_PER_READ):
                stored.extend(await self._read(subjects[i : i + SUBJECTS_PER_READ], after, budget))
        except _TooMany:
            log.info("user %d: more than %d events to replay; resync", user_id, self.limit)
            return Replay(through=start.last_seq, resync="history_unavailable")
        for message in stored:
            try:
                wire = decode_event(message.subject, message.payload, message.headers, message.seq)
            except BadEvent as exc:
                log.warning("%s", exc)
                continue
            if any(lo <= wire.event_seq <= hi for lo, hi in spans.get(wire.chat_id, ())):
                out.append(_stamped(RoutedEvent(wire)))
        end = await read_stream_state(self._bus, self._stream)
        if end.incarnation != start.incarnation or end.first_seq > after + 1:
            return Replay(through=start.last_seq, resync="history_unavailable")  # evicted
        out.sort(key=lambda e: e.seq)
        return Replay(out, start.last_seq)

    async def _read(
        self, subjects: list[str], after: int, budget: list[int]
    ) -> list[StoredMessage]:
        """Every stored message of ``subjects`` after ``after``, until nothing is pending."""
        out: list[StoredMessage] = []
        position = after + 1
        while True:
            page = await self._bus.read_subjects(self._stream, subjects, position, READ_PAGE)
            budget[0] -= len(page.messages)
            if budget[0] < 0 or page.pending > budget[0]:
                raise _TooMany
            out.extend(page.messages)
            if not page.messages or page.pending == 0:
                return out
            position = page.messages[-1].seq + 1


def _spans(
    notices: list[StoredMessage], current: set[int], out: list[Event]
) -> dict[int, list[tuple[float, float]]]:
    """Per chat, the ``event_seq`` ranges owed to the user, from their notices (in stream
    order) and their chats now."""
    first: dict[int, str] = {}  # chat → kind of its first notice
    steps: list[tuple[int, str, int]] = []  # (chat, joined|left, event_seq)
    for message in notices:
        headers = message.headers or {}
        try:
            data = json.loads(message.payload)
            name = headers.get(H_EVENT, "")
            if is_workspace_event(name):  # the user's own copy of a workspace event
                out.append(routed(name, data, int(headers.get(H_SEQ, 0)), message.seq))
                continue
            kind = "left" if "left" in data else "joined"
            chat_id = int(data["id"])
            steps.append((chat_id, kind, int(data.get("event_seq", headers.get(H_SEQ, 0)))))
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("unreadable notice %s#%d: %r", message.subject, message.seq, exc)
            continue
        first.setdefault(chat_id, steps[-1][1])
    spans: dict[int, list[tuple[float, float]]] = {}
    open_at: dict[int, float] = {}
    for chat_id in current | set(first):
        # A member at the resume point: left first, or a member now with no notice at all.
        if first.get(chat_id) == "left" or (chat_id not in first and chat_id in current):
            open_at[chat_id] = 1
    for chat_id, kind, event_seq in steps:
        if kind == "joined":
            open_at.setdefault(chat_id, max(1, event_seq))
        elif chat_id in open_at:
            spans.setdefault(chat_id, []).append((open_at.pop(chat_id), event_seq))
    for chat_id, lo in open_at.items():
        spans.setdefault(chat_id, []).append((lo, math.inf))
    return spans


def _stamped(event: RoutedEvent) -> RoutedEvent:
    event.seq = event.stream_seq  # the ring's key; the hub stamps the id
    return event
