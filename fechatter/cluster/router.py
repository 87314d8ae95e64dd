"""The ChatRouter: one writer per chat across the cluster (docs/cluster.md §3, plan step A4).

In cluster mode the domain calls ``ChatRouter.call(chat_id, command)`` where one process
calls ``Directory.call``; same signature, same errors. The router finds the chat's owner —
its cache (``chat_id -> Owner``, no TTL) or ``acquire_chat`` (which takes the chat when
nobody live holds it) — and then:

- **this node owns it**: the local ``Directory`` runs the command on the chat's actor. Every
  activation takes the lease again (``Directory.activate`` is ``_activate`` here) and gives
  the actor the chat's fenced ``ChatStore``, so a stale owner's write raises ``ChatMoved``
  and writes nothing;
- **another live node owns it**: the command travels as a NATS request to that node's inbox
  (``<prefix>.node.<node_id>.cmd``, header ``Fechatter-Proto``) in the codec's frames, and
  the decoded reply is returned or the decoded error raised.

Outcomes and retries (§3's table): ``ChatMoved`` (local, or the owner's answer), the owner's
``ProtocolMismatch`` answer and NATS no-responders were not executed: the cache entry is
dropped and the call re-resolves and retries. A timeout, a lost connection or an answer this
node cannot decode leave the outcome unknown: retried only when ``codec.retry_safe``. At most
``MAX_ATTEMPTS`` failed attempts, ``RETRY_BACKOFF`` apart, within ``call_timeout`` overall;
then 503 ``chat_unavailable``. Waiting for a crashed owner's row to expire (its inbox gone,
its lease not yet takeable) polls the acquire every ``HANDOVER_POLL`` seconds and is bounded
by the deadline only.

A node with role ``realtime`` owns no chat (``owns_chats`` False): it never acquires a lease
and its ``Directory`` never activates an actor. It reads the chat's lease instead: a live
owner is cached and forwarded to as above; no live owner (no lease, or its node is not in the
live list, or its inbox has no responder) → the request goes to ``<prefix>.cmd.any``, a queue
group every api/all node serves (``serve_any``): one of them takes it and runs it through its
own ``call`` — acquiring the chat if nobody live holds it, else forwarding to the owner.

``serve_inbox`` answers this node's inbox: decode, run locally (the actor's activation and
fence make sure it runs only while this node owns the chat; otherwise it answers
``chat_moved`` before anything is written), encode the reply or error. Events: with
``outbox`` (set by ``fechatter.cluster.wiring``) the actor's writes also insert their events
into the outbox, which the node's ``OutboxPublisher`` publishes; without it they stay local.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from typing import Any, TypeVar

import trio

from fechatter.actors.commands import Command, Typing
from fechatter.actors.directory import Directory
from fechatter.bus import Bus, BusState, Gap, Message, NoResponders, Subscription
from fechatter.cluster import codec
from fechatter.cluster.node import ClusterNode
from fechatter.errors import (
    ChatMoved,
    CodecError,
    FechatterError,
    NotFound,
    ProtocolMismatch,
    Unavailable,
)
from fechatter.storage.cluster import ChatStore, ClusterStore, Fence, Owner

log = logging.getLogger(__name__)

R = TypeVar("R")

MAX_ATTEMPTS = 3  # failed attempts of one call before 503 chat_unavailable (§3)
RETRY_BACKOFF = 0.05  # seconds between a failed attempt and the next
HANDOVER_POLL = 0.25  # seconds between acquires while a silent owner's row has not expired
REQUEST_CEILING = 5.0  # seconds, one NATS request (§3: min(remaining, 5 s))
# Inbox full cases: requests beyond INBOX_BUFFER waiting are dropped by the subscription
# (their senders time out and retry if retry_safe); at most INBOX_CONCURRENCY run at once,
# the next waits for a slot (the subscription buffers meanwhile).
INBOX_BUFFER = 1024
INBOX_CONCURRENCY = 256
# Owner cache bound: past it the oldest entry is dropped (it is re-resolved on next use).
OWNER_CACHE_MAX = 100_000
# Graceful leave: a forwarded command that reaches the leaving node is held until the node's
# row is ended, then answered ``chat_moved`` — at most this long, and HOLD_MARGIN before its
# deadline, so the answer arrives within the sender's request timeout (REQUEST_CEILING).
HOLD_CEILING = REQUEST_CEILING - 1.0
HOLD_MARGIN = 0.5


def inbox_subject(prefix: str, node_id: str) -> str:
    """The subject a node serves forwarded commands on (docs/cluster.md §3)."""
    return f"{prefix}.node.{node_id}.cmd"


def any_subject(prefix: str) -> str:
    """The subject of commands for a chat with no live owner, sent by nodes that own no
    chats (role realtime); api/all nodes serve it in the queue group ``ANY_QUEUE``, so
    exactly one of them takes each request, acquires the chat and runs it."""
    return f"{prefix}.cmd.any"


ANY_QUEUE = "owners"  # the queue group of <prefix>.cmd.any: every api/all node
# The "owner" of a chat a realtime node knows no live owner of: the command goes to cmd.any.
ANY_OWNER = Owner("", 0)


def _unavailable() -> Unavailable:
    return Unavailable("the chat did not answer in time", code="chat_unavailable")


class _Refused(Exception):
    """An attempt that was not executed (safe to retry); ``owner`` answered or was absent."""


class _Unknown(Exception):
    """An attempt whose outcome is unknown (timeout, connection lost, unreadable answer)."""


class ChatRouter:
    """Routes chat commands to their owner node; build it with ``ChatRouter(...)`` and run
    ``serve_inbox`` for as long as it is used (``open_chat_router`` in ``fechatter.app``)."""

    def __init__(
        self,
        node: ClusterNode,
        directory: Directory,
        *,
        prefix: str,
        call_timeout: float,
    ) -> None:
        self._node = node
        self._store: ClusterStore = node.store
        self._bus: Bus = node.bus
        self._directory = directory
        self._prefix = prefix
        self._call_timeout = call_timeout
        self._owners: dict[int, Owner] = {}
        self._slots = trio.Semaphore(INBOX_CONCURRENCY)
        # cmd.any has slots of its own: its requests may wait for a takeover (or forward to
        # another node's inbox) until their deadline; sharing the inbox's slots would make
        # commands for the chats this node owns wait behind them.
        self._any_slots = trio.Semaphore(INBOX_CONCURRENCY)
        self.forwarded = 0  # requests sent to other nodes (tests, metrics)
        self.served = 0  # requests answered from the inbox
        self.forwarded_any = 0  # of ``forwarded``: sent to <prefix>.cmd.any
        self.served_any = 0  # requests taken from <prefix>.cmd.any
        # role realtime owns no chat: it never acquires a lease and runs no ChatActor; its
        # commands go to the owner, or to cmd.any when the chat has no live owner.
        self.owns_chats = node.role != "realtime"
        # Actors write their events to the outbox (True while the event wiring runs: its
        # OutboxPublisher publishes them); False: fenced writes only, events stay local.
        self.outbox = False
        # Set by the event wiring: ``published(chat_id)`` returns once the events this
        # node's actor committed so far for the chat are stored (bounded); a write is
        # answered after it, as one process answers after publishing.
        self.published: Callable[[int], Awaitable[None]] | None = None
        # Graceful leave (``begin_leave`` … ``released``): this node takes no chat any more;
        # commands it still gets wait for the release, then go to the new owners.
        self.leaving = False
        self._released = trio.Event()
        self._any_sub: Subscription | None = None  # serve_any's, once subscribed
        self.held = 0  # commands held until the release (tests, logs)
        # Forwards waiting on a node's reply, by node id: cancelled by ``serve_departures``
        # when the node leaves the live list (its row expired: a killed owner never answers,
        # so waiting out REQUEST_CEILING would add up to 5 s to the takeover). One scope per
        # forward in flight; bounded by the callers' concurrency.
        self._in_flight: dict[str, set[trio.CancelScope]] = {}
        self.abandoned = 0  # forwards cancelled because their node left (tests, logs)
        self._held_more = trio.Event()  # set (and replaced) at each hold
        directory.activate = self._activate

    # -- owners ---------------------------------------------------------------------------
    def cached_owner(self, chat_id: int) -> Owner | None:
        """The owner this node believes holds ``chat_id`` (None: not cached)."""
        return self._owners.get(chat_id)

    def _remember(self, chat_id: int, owner: Owner) -> None:
        owners = self._owners
        owners.pop(chat_id, None)
        if len(owners) >= OWNER_CACHE_MAX:
            del owners[next(iter(owners))]
        owners[chat_id] = owner

    def _forget(self, chat_id: int, owner: Owner) -> None:
        if self._owners.get(chat_id) == owner:
            del self._owners[chat_id]

    async def _acquire(self, chat_id: int) -> Owner:
        owner = await self._store.acquire_chat(
            chat_id, self._node.node_id, have_nats=self._node.nats_ok
        )
        if owner is None:
            raise NotFound("chat not found", code="chat_not_found")
        self._remember(chat_id, owner)
        return owner

    async def _resolve(self, chat_id: int) -> Owner:
        if self.leaving:
            return await self._resolve_leaving(chat_id)
        cached = self._owners.get(chat_id)
        if cached is not None:
            if cached.node_id == self._node.node_id or cached.node_id in self._node.nodes:
                return cached
            # Its node's row expired (the live list, refreshed each beat): a frozen or cut-off
            # owner may still hold its inbox subscription, so a forward would wait out the
            # request timeout. Resolve again: the lease is takeable now.
            del self._owners[chat_id]
        if self.owns_chats:
            return await self._acquire(chat_id)
        # Role realtime: read the lease, never take it. A live owner is cached and forwarded
        # to; none (no lease, or its node is not in the live list) → cmd.any.
        owner = await self._store.lease(chat_id)
        if owner is None or owner.node_id not in self._node.nodes:
            return ANY_OWNER
        self._remember(chat_id, owner)
        return owner

    async def _resolve_leaving(self, chat_id: int) -> Owner:
        """A leaving node never acquires (after its release ``acquire_chat`` would hand it
        its own chats back): it waits for the release (bounded by the call's deadline),
        then reads the lease like a realtime node — a live owner elsewhere is forwarded
        to, else ``cmd.any`` (which this node no longer serves) finds one."""
        await self._released.wait()
        owner = await self._store.lease(chat_id)
        me = self._node.node_id
        if owner is None or owner.node_id == me or owner.node_id not in self._node.nodes:
            return ANY_OWNER
        return owner

    # -- graceful leave -----------------------------------------------------------------
    async def begin_leave(self) -> None:
        """The first step of a graceful leave (``fechatter.cluster.leave``): refuse every
        activation, retire the running actors — a batch in progress commits and is
        answered; calls queued behind it fail ``ChatMoved`` unrun — and stop taking
        ``cmd.any`` requests (those taken finish). From here, a command reaching this node
        (its inbox, or a local call) waits for ``released`` and then goes to the new owner.
        The unsubscribe is bounded (2 s) and shielded; NATS unavailable → skipped."""
        self.leaving = True
        self._directory.retire_all("this node is leaving the cluster")
        if self._any_sub is not None:
            with trio.CancelScope(shield=True), trio.move_on_after(2.0), suppress(Unavailable):
                await self._bus.unsubscribe(self._any_sub)

    def released(self) -> None:
        """The node's row is ended (its leases takeable by others): answer the held
        commands (``chat_moved``: their senders re-resolve to the new owners)."""
        self._released.set()

    async def wait_held(self, count: int) -> None:
        """Return once ``count`` commands have been held by the leave (tests; bound it with
        ``trio.fail_after``)."""
        while self.held < count:
            await self._held_more.wait()

    async def _hold(self, deadline: float) -> None:
        """While leaving: wait for the release, at most until ``deadline`` (wall clock) less
        ``HOLD_MARGIN`` and at most ``HOLD_CEILING`` seconds — within the sender's own
        request timeout, so it reads our ``chat_moved`` rather than timing out."""
        if self._released.is_set():
            return
        self.held += 1
        self._held_more.set()
        self._held_more = trio.Event()
        limit = min(HOLD_CEILING, deadline - time.time() - HOLD_MARGIN)
        with trio.move_on_after(max(0.0, limit)):
            await self._released.wait()

    async def _activate(self, chat_id: int) -> ChatStore:
        """``Directory.activate``: take (or confirm) the lease, then the fenced writes.
        Raises ``ChatMoved`` when another live node holds it, this node is fenced or owns no
        chats (role realtime), ``NotFound`` when there is no such chat."""
        if not self.owns_chats:
            raise ChatMoved("a realtime node owns no chats")
        if self.leaving:
            raise ChatMoved("this node is leaving the cluster")
        if self._node.self_fenced:
            raise ChatMoved("this node has fenced itself")
        me = self._node.node_id
        owner = await self._acquire(chat_id)
        if owner.node_id != me:
            raise ChatMoved(f"chat {chat_id} is owned by node {owner.node_id}")
        log.info("chat %d: owned by this node at epoch %d", chat_id, owner.epoch)
        return self._store.chat_store(Fence(chat_id, me, owner.epoch), outbox=self.outbox)

    # -- calls ----------------------------------------------------------------------------
    async def call(self, chat_id: int, command: Command[R]) -> R:
        """Run ``command`` at the chat's owner and return its reply (``Directory.call``'s
        contract). Raises the owner's error, ``NotFound`` (no such chat) or ``Unavailable``
        (``chat_unavailable``) when no owner answered within ``call_timeout`` seconds or
        ``MAX_ATTEMPTS`` attempts failed."""
        failed = 0
        silent: str | None = None  # an owner that had no responder: wait for its expiry
        with trio.move_on_after(self._call_timeout) as scope:
            deadline = scope.deadline
            while True:
                owner = await self._resolve(chat_id)
                if owner.node_id == silent and owner is not ANY_OWNER:
                    self._forget(chat_id, owner)
                    if not self.owns_chats:  # an api node waits for the takeover for us
                        owner = ANY_OWNER
                    else:
                        # Its inbox is gone but its row has not expired yet (a crash): poll.
                        await trio.sleep(HANDOVER_POLL)
                        continue
                try:
                    if owner.node_id == self._node.node_id:
                        return await self._local(chat_id, command, owner)
                    return await self._forward(chat_id, command, owner, deadline)
                except _Refused as refusal:
                    silent = owner.node_id if isinstance(refusal.__cause__, NoResponders) else None
                    why: BaseException | None = refusal.__cause__
                except _Unknown as unknown:
                    if not codec.retry_safe(command):
                        log.warning(
                            "chat %d: %s at node %s has an unknown outcome (%s); not retried",
                            chat_id,
                            type(command).__name__,
                            owner.node_id,
                            unknown.__cause__,
                        )
                        raise _unavailable() from unknown.__cause__
                    why = unknown.__cause__
                self._forget(chat_id, owner)
                failed += 1
                if failed >= MAX_ATTEMPTS:
                    log.warning(
                        "chat %d: %s failed %d times, last at node %s: %s",
                        chat_id,
                        type(command).__name__,
                        failed,
                        owner.node_id,
                        why,
                    )
                    break
                await trio.sleep(RETRY_BACKOFF)
        if scope.cancelled_caught:
            log.warning("chat %d: %s timed out", chat_id, type(command).__name__)
        raise _unavailable()

    async def _local(self, chat_id: int, command: Command[R], owner: Owner) -> R:
        if self._node.self_fenced:
            raise _unavailable()
        try:
            return await self._run_here(chat_id, command)
        except ChatMoved as exc:
            raise _Refused from exc

    async def _run_here(self, chat_id: int, command: Command[R]) -> R:
        """The command on this node's actor, answered once its events are stored
        (``published``, bounded by the wiring) — not for typing, which has none."""
        value = await self._directory.call(chat_id, command)
        if self.published is not None and not isinstance(command, Typing):
            await self.published(chat_id)
        return value

    async def _forward(self, chat_id: int, command: Command[R], owner: Owner, deadline: float) -> R:
        remaining = deadline - trio.current_time()
        payload = codec.encode_request(chat_id, command, time.time() + remaining)
        if owner is ANY_OWNER:
            subject = any_subject(self._prefix)
            self.forwarded_any += 1
        else:
            subject = inbox_subject(self._prefix, owner.node_id)
        self.forwarded += 1
        departed = trio.CancelScope()  # cmd.any has no one node to watch: never cancelled
        flights = (
            self._in_flight.setdefault(owner.node_id, set()) if owner is not ANY_OWNER else set()
        )
        flights.add(departed)
        try:
            with departed:
                reply = await self._bus.request(
                    subject,
                    payload,
                    min(remaining, REQUEST_CEILING),
                    headers={codec.PROTO_HEADER: str(codec.PROTO)},
                )
        except NoResponders as exc:
            raise _Refused from exc
        except Unavailable as exc:  # RequestTimeout, lost connection, the responder failed
            raise _Unknown from exc
        finally:
            flights.discard(departed)
            if not flights and self._in_flight.get(owner.node_id) is flights:
                del self._in_flight[owner.node_id]
        if departed.cancelled_caught:  # its row expired mid-request: like a timeout, sooner
            raise _Unknown from Unavailable(f"node {owner.node_id} left the cluster")
        try:
            outcome = codec.decode_reply(reply.payload, command)
        except CodecError as exc:  # the owner may have run it: like a timeout
            raise _Unknown from exc
        if isinstance(outcome, codec.Ok):
            return outcome.value
        error = outcome.error
        if isinstance(error, ChatMoved | ProtocolMismatch):
            raise _Refused from error
        raise error

    async def serve_departures(self, *, task_status: trio.TaskStatus[None]) -> None:
        """Until cancelled: at each refresh of the live node list (every beat), cancel the
        forwards waiting on a node that is no longer in it, so their calls re-resolve and
        take the chat over as soon as the row expires instead of after the request timeout
        (an unknown outcome, retried when ``codec.retry_safe``, as a timeout would be)."""
        task_status.started()
        while True:
            await self._node.wait_changed()
            live = self._node.nodes
            for node_id in [node_id for node_id in self._in_flight if node_id not in live]:
                for scope in self._in_flight.pop(node_id):
                    scope.cancel()
                    self.abandoned += 1

    # -- the inbox ------------------------------------------------------------------------
    async def serve_inbox(self, *, task_status: trio.TaskStatus[None]) -> None:
        """Answer forwarded commands on this node's inbox until cancelled (never returns).
        Follows the node id: a node that registers again under a new id serves the new
        inbox (its old leases are not its any more)."""
        started = False
        while True:
            node_id = self._node.node_id
            try:
                sub = await self._bus.subscribe(
                    inbox_subject(self._prefix, node_id), buffer=INBOX_BUFFER
                )
            except Unavailable:
                await self._bus.wait_state(BusState.CONNECTED)
                continue
            try:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._follow_id, node_id, nursery.cancel_scope)
                    if not started:
                        task_status.started()
                        started = True
                    async for item in sub:
                        if isinstance(item, Gap):
                            if item.dropped:  # 0: the connection was lost (the bus logs it)
                                log.warning(
                                    "inbox of %s dropped %d requests", node_id, item.dropped
                                )
                            continue
                        if not item.reply:
                            continue
                        await self._slots.acquire()
                        nursery.start_soon(self._answer, item)
            finally:
                with trio.CancelScope(shield=True), trio.move_on_after(2.0), suppress(Unavailable):
                    await self._bus.unsubscribe(sub)

    async def serve_any(self, *, task_status: trio.TaskStatus[None]) -> None:
        """Take requests from ``<prefix>.cmd.any`` (queue group ``ANY_QUEUE``: one api/all
        node gets each) until cancelled: each runs through ``call`` here — acquire the chat
        if nobody live holds it, else forward to its owner. Same bounds as the inbox, but
        slots of its own (never blocking the inbox)."""
        subject = any_subject(self._prefix)
        while True:
            try:
                sub = await self._bus.subscribe(subject, buffer=INBOX_BUFFER, queue=ANY_QUEUE)
                break
            except Unavailable:
                await self._bus.wait_state(BusState.CONNECTED)
        try:
            async with trio.open_nursery() as nursery:
                task_status.started()
                self._any_sub = sub
                # ``begin_leave`` unsubscribes: the loop ends after the buffered requests,
                # the nursery after those running.
                async for item in sub:
                    if isinstance(item, Gap):
                        if item.dropped:  # 0: the connection was lost (the bus logs it)
                            log.warning("%s dropped %d requests", subject, item.dropped)
                        continue
                    if not item.reply:
                        continue
                    await self._any_slots.acquire()
                    nursery.start_soon(self._answer, item, True)
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(2.0), suppress(Unavailable):
                await self._bus.unsubscribe(sub)

    def retire_local_actors(self) -> None:
        """``ClusterNode.on_fence`` hook: this node just fenced itself (its leases may move
        while it cannot confirm them; docs/cluster.md §2), so every local actor retires
        before its next batch; their calls fail with ``ChatMoved`` and are re-routed, and
        no stale actor answers typing or lingers."""
        self._directory.retire_all("this node has fenced itself")

    async def _follow_id(self, node_id: str, scope: trio.CancelScope) -> None:
        while self._node.node_id == node_id:
            await self._node.wait_changed()
        scope.cancel()

    async def _answer(self, message: Message, any_node: bool = False) -> None:
        try:
            try:
                answer = await self.handle_request(
                    message.payload, message.headers, any_node=any_node
                )
            except Exception:  # a bug: answer it (the sender retries only if retry_safe)
                log.exception("forwarded command failed on %s", message.subject)
                answer = codec.encode_error(_unavailable())
            try:
                await self._bus.publish(message.reply, answer)
            except Unavailable:
                log.warning("could not answer a forwarded command: NATS unavailable")
        finally:
            (self._any_slots if any_node else self._slots).release()

    async def handle_request(
        self, payload: bytes, headers: Any, *, any_node: bool = False
    ) -> bytes:
        """The reply frame for one request frame (``headers``: its NATS headers or None).
        ``any_node``: taken from ``cmd.any``, so run through ``call`` (acquire or forward)
        rather than this node's actors only. Never raises a ``FechatterError``: every
        failure is an error frame."""
        self.served += 1
        if any_node:
            self.served_any += 1
        version = (headers or {}).get(codec.PROTO_HEADER)
        if version is None or not version.isdigit() or int(version) not in codec.SUPPORTED:
            log.error(
                "forwarded command with protocol %r; this node speaks %s",
                version,
                sorted(codec.SUPPORTED),
            )
            return codec.encode_error(
                ProtocolMismatch(f"protocol {version!r:.20} not in {sorted(codec.SUPPORTED)}")
            )
        try:
            request = codec.decode_request(payload)
        except CodecError as exc:
            log.error("undecodable forwarded command: %s", exc)
            return codec.encode_error(exc)
        remaining = request.deadline - time.time()
        try:
            if remaining <= 0:
                raise _unavailable()
            if self._node.self_fenced:
                raise ChatMoved("this node has fenced itself")
            if self.leaving and not any_node:
                raise ChatMoved("this node is leaving the cluster")
            with trio.move_on_after(remaining):
                if any_node:
                    value = await self.call(request.chat_id, request.command)
                else:
                    value = await self._run_here(request.chat_id, request.command)
                return codec.encode_reply(request.command, value, v=request.v)
            raise _unavailable()
        except FechatterError as exc:
            if isinstance(exc, ChatMoved):
                self._owners.pop(request.chat_id, None)
                if self.leaving:  # answered once the chat is takeable: no refusal loop
                    await self._hold(request.deadline)
            return codec.encode_error(exc, v=request.v)


@asynccontextmanager
async def open_chat_router(
    node: ClusterNode, directory: Directory, *, prefix: str, call_timeout: float
) -> AsyncIterator[ChatRouter]:
    """A ``ChatRouter`` over ``directory`` with this node's inbox served for the block.
    ``prefix`` is the NATS subject prefix (``Settings.nats_prefix``); ``call_timeout`` bounds
    every ``call`` (seconds). On exit the inbox is unsubscribed; requests in flight there are
    cancelled (their senders time out) and the directory stops activating chats."""
    router = ChatRouter(node, directory, prefix=prefix, call_timeout=call_timeout)
    node.on_fence.append(router.retire_local_actors)
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(router.serve_inbox)
            await nursery.start(router.serve_departures)
            if router.owns_chats:
                await nursery.start(router.serve_any)
            try:
                yield router
            finally:
                nursery.cancel_scope.cancel()
    finally:
        node.on_fence.remove(router.retire_local_actors)
        directory.activate = _closed


async def _closed(chat_id: int) -> ChatStore:
    raise ChatMoved("this node stopped serving chats")
