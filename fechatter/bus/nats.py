"""``NatsBus``: the ``Bus`` protocol over nats-py (asyncio), driven from trio.

nats-py is an asyncio library; it runs on its own asyncio event loop in a thread owned by
``open_nats_bus`` (``_Bridge``): ``call`` runs a coroutine on that loop and returns its
result to trio, ``deliver`` / ``gap`` / ``soon`` hand messages, losses and state changes from
the asyncio thread to trio. The asyncio module itself is left alone (no policy, no patched
functions): other asyncio users in the process are unaffected. Every nats-py exception is
translated into ``fechatter.errors.Unavailable`` (or its subclasses in ``base.py``) here;
nothing else imports nats-py.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import ssl
import threading
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping, Sequence
from contextlib import asynccontextmanager, suppress
from typing import Any, TypeVar

import nats
import nats.errors
import nats.js.api
import nats.js.errors
import trio
from nats.aio.client import Client
from nats.aio.msg import Msg

from fechatter.bus.base import (
    BusState,
    ChainResult,
    Handler,
    JsPublish,
    Message,
    NoResponders,
    PublishAck,
    RequestTimeout,
    StoredMessage,
    StreamPage,
    Subscription,
)
from fechatter.config import redact_url
from fechatter.errors import Unavailable

log = logging.getLogger(__name__)

T = TypeVar("T")

OP_TIMEOUT = 5.0  # seconds: ceiling of any single bus operation (the "never hang" bound)
RECONNECT_WAIT = 0.25  # seconds between reconnect attempts (nats-py retries forever)
# nats-py's own per-subscription staging queue, between its socket reader and our callback:
# it holds what one read burst parsed before the callback task runs (our callback only hands
# the message to the trio side, so it empties at once unless the loop is starved). Full case:
# nats-py drops and reports a slow consumer; we put a Gap into the subscription at once, so
# the Gap may come *before* messages staged ahead of the loss — harmless for a consumer that
# re-reads from its last processed sequence and drops repeats by sequence (base.Gap).
STAGING_MSGS = 65_536
STAGING_BYTES = 64 * 1024 * 1024
# How long closing the bus waits for the asyncio thread to stop after the connection closed
# (it has nothing left to run by then). Past it the thread is abandoned and an error logged.
THREAD_JOIN_CEILING = 5.0  # seconds
ERROR_HEADER = "Fechatter-Bus-Error"  # a responder's handler failed; the requester raises
CONSUMER_IDLE = 30.0  # seconds: a read_subjects consumer whose delete was lost goes after this


class _Lost:
    """Messages lost on the asyncio side: the bridge's hand-off queue was full, or nats-py
    reported a slow consumer. Becomes ``Subscription._mark_gap(count)`` on trio."""

    __slots__ = ("count",)

    def __init__(self, count: int) -> None:
        self.count = count


class _Bridge:
    """trio ↔ asyncio for nats-py: an asyncio loop on a thread of its own.

    trio → asyncio: ``asyncio.run_coroutine_threadsafe``; the future's done-callback wakes the
    waiting trio task through ``TrioToken.run_sync_soon`` (neither thread blocks on the other).
    A trio cancellation cancels the asyncio task. asyncio → trio: each subscription has a
    hand-off deque; the asyncio thread appends, and only when it makes the deque non-empty
    does it schedule one ``run_sync_soon(_drain)``, which hands everything queued by then to
    the ``Subscription`` — one trio wake-up per burst, not per message, in socket order.
    Full case of a deque (trio starved while ``buffer`` messages arrived): the message is
    dropped and counted in a ``_Lost`` marker at the deque's end, which becomes a ``Gap``.
    Chosen over trio-asyncio, which patches the ``asyncio`` module process-wide on import
    (docs/cluster.md "NATS client on trio").
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, token: trio.lowlevel.TrioToken) -> None:
        self.loop = loop
        self._token = token
        self._pending: dict[int, collections.deque[Message | _Lost]] = {}

    async def call(self, fn: Callable[[], Coroutine[Any, Any, T]]) -> T:
        future = asyncio.run_coroutine_threadsafe(fn(), self.loop)
        done = trio.Event()
        token = self._token

        def wake(_: object) -> None:  # on the asyncio thread
            with suppress(trio.RunFinishedError):  # a cancelled call ending after trio.run
                token.run_sync_soon(done.set)

        future.add_done_callback(wake)
        try:
            await done.wait()
        except trio.Cancelled:
            future.cancel()
            raise
        return future.result()

    def soon(self, fn: Callable[..., object], *args: Any) -> None:
        """Run ``fn(*args)`` on trio (from the asyncio thread)."""
        with suppress(trio.RunFinishedError):
            self._token.run_sync_soon(fn, *args)

    def _queue(self, sub: Subscription) -> collections.deque[Message | _Lost]:
        pending = self._pending.get(id(sub))
        if pending is None:
            pending = self._pending[id(sub)] = collections.deque()
        return pending

    def deliver(self, sub: Subscription, message: Message) -> None:
        """Hand ``message`` to ``sub`` (from the asyncio thread); see the class's full case."""
        # deque append/popleft/len are atomic under the GIL; the deque holds at most
        # ``sub.buffer`` messages and one ``_Lost`` marker after them.
        pending = self._queue(sub)
        if len(pending) < sub.buffer:
            pending.append(message)
        elif isinstance(pending[-1], _Lost):
            pending[-1].count += 1  # a lower bound if trio takes the marker right now
        else:
            pending.append(_Lost(1))
        if len(pending) == 1:
            self.soon(self._drain, sub, pending)

    def gap(self, sub: Subscription, dropped: int) -> None:
        """``dropped`` messages of ``sub`` were lost before ``deliver`` (asyncio thread);
        0: the connection was lost (``Subscription.connection_lost``)."""
        pending = self._queue(sub)
        pending.append(_Lost(dropped))  # in order with the messages queued before it
        if len(pending) == 1:
            self.soon(self._drain, sub, pending)

    def forget(self, sub: Subscription) -> None:
        self._pending.pop(id(sub), None)

    @staticmethod
    def _drain(sub: Subscription, pending: collections.deque[Message | _Lost]) -> None:
        # On trio. An item is removed only after it is handed over, and the asyncio side
        # schedules a drain only when it makes the deque non-empty: nothing is stranded (a
        # drain finding the deque already emptied by an earlier one does nothing).
        while pending:
            item = pending[0]
            if isinstance(item, _Lost):
                if item.count:
                    sub._mark_gap(item.count)
                else:  # the connection was lost (``_on_disconnected``)
                    sub.connection_lost()
            else:
                sub._offer(item)
            pending.popleft()


@asynccontextmanager
async def _open_bridge(name: str) -> AsyncIterator[_Bridge]:
    """Start an asyncio loop on a new thread; stop it and join the thread on exit.

    The thread is this context manager's: started here, and on exit (also on error or
    cancellation) its loop is stopped, leftover asyncio tasks are cancelled, and the exit
    waits, shielded, up to ``THREAD_JOIN_CEILING`` seconds for the thread to end.
    """
    loop = asyncio.SelectorEventLoop()  # explicit: no policy, no global loop is touched
    token = trio.lowlevel.current_trio_token()
    stopped = trio.Event()

    def run_loop() -> None:
        try:
            loop.run_forever()
            leftovers = asyncio.all_tasks(loop)
            for task in leftovers:
                task.cancel()
            if leftovers:
                loop.run_until_complete(asyncio.wait(leftovers, timeout=THREAD_JOIN_CEILING / 2))
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            loop.close()
            with suppress(trio.RunFinishedError):
                token.run_sync_soon(stopped.set)

    thread = threading.Thread(target=run_loop, name=f"nats-bus-{name}", daemon=True)
    thread.start()
    try:
        yield _Bridge(loop, token)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        with trio.CancelScope(shield=True):
            with trio.move_on_after(THREAD_JOIN_CEILING):
                await stopped.wait()
        if stopped.is_set():
            thread.join()  # it has run its last line: returns at once
        else:
            log.error("the nats bus thread did not stop in %ss; abandoned", THREAD_JOIN_CEILING)


# -- the bus ------------------------------------------------------------------------------
def _headers(headers: Mapping[str, str] | None) -> dict[str, str] | None:
    return dict(headers) if headers else None


def _message(msg: Msg) -> Message:
    return Message(msg.subject, msg.data, msg.headers or None, msg.reply or "")


class NatsBus:
    """The ``Bus`` over one nats-py connection; build it with ``open_nats_bus``."""

    def __init__(self, bridge: _Bridge, timeout: float) -> None:
        self._bridge = bridge
        self._timeout = timeout
        self._nc = Client()
        self._state = BusState.CONNECTING
        self._state_changed = trio.Event()
        self._subs: dict[int, Subscription] = {}  # nats sid → ours (for slow-consumer gaps)
        self._nats_subs: dict[int, Any] = {}
        self._failed_reconnects = 0  # in the current outage (asyncio thread only)
        # Messages our callback handed to the bridge, per nats sid (asyncio thread only).
        self._handed: dict[int, list[int]] = {}

    # -- connection state (set on trio via the bridge) ------------------------------------
    @property
    def state(self) -> BusState:
        return self._state

    def _set_state(self, state: BusState) -> None:
        if state is not self._state:
            log.info("nats bus %s", state.value)
            self._state = state
            self._state_changed.set()
            self._state_changed = trio.Event()

    async def wait_state(self, state: BusState) -> None:
        """Return once the connection is in ``state`` (bound it with ``trio.fail_after``)."""
        while self._state is not state:
            await self._state_changed.wait()

    async def _on_disconnected(self) -> None:
        if not self._nc.is_closed:
            # Whatever is published until the reconnect never reaches our subscriptions (core
            # NATS does not replay): a Gap(0) in each, after everything the old connection
            # read, before anything the new one will (docs/cluster.md §4 R2). Consumers that
            # can re-read (chat events from JetStream, notices from PostgreSQL) catch up.
            for sub in list(self._subs.values()):
                self._bridge.gap(sub, 0)
        self._bridge.soon(
            self._set_state, BusState.CLOSED if self._nc.is_closed else BusState.RECONNECTING
        )

    async def _on_reconnected(self) -> None:
        if self._failed_reconnects:
            log.info("nats reconnected after %d failed attempts", self._failed_reconnects)
        self._failed_reconnects = 0
        self._bridge.soon(self._set_state, BusState.CONNECTED)

    async def _on_closed(self) -> None:
        self._bridge.soon(self._set_state, BusState.CLOSED)

    async def _on_error(self, exc: Exception) -> None:
        if isinstance(exc, nats.errors.SlowConsumerError) and exc.sub is not None:
            sub = self._subs.get(exc.sub._id)
            if sub is not None:
                self._bridge.gap(sub, 1)
            return
        if not self._nc.is_connected:  # an attempt to (re)connect failed
            # nats-py replaces the transport of an attempt that failed after the TCP connect
            # (the server closed it during the handshake) without closing it: its StreamWriter
            # would warn when collected (ResourceWarning, at any later moment). Close it now;
            # closing a closed transport does nothing.
            transport = self._nc._transport
            if transport is not None:
                transport.close()  # type: ignore[no-untyped-call]
            # One warning per outage, not one per attempt (every RECONNECT_WAIT seconds).
            self._failed_reconnects += 1
            if self._failed_reconnects > 1:
                log.debug("nats reconnect failed: %r", exc)
                return
            log.warning(
                "nats reconnect failed: %r; retrying every %gs (logged at DEBUG until back)",
                exc,
                RECONNECT_WAIT,
            )
            return
        log.warning("nats client error: %r", exc)

    async def _connect(
        self,
        servers: list[str],
        name: str,
        credentials: str | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        url = ",".join(redact_url(s) for s in servers)
        try:
            await self._call(
                lambda: self._nc.connect(
                    servers=servers,
                    name=name,
                    user_credentials=credentials,
                    tls=tls,
                    # Both annotated int in nats-py but used as float seconds (asyncio).
                    connect_timeout=self._timeout,  # type: ignore[arg-type]
                    reconnect_time_wait=RECONNECT_WAIT,  # type: ignore[arg-type]
                    max_reconnect_attempts=-1,
                    error_cb=self._on_error,
                    disconnected_cb=self._on_disconnected,
                    reconnected_cb=self._on_reconnected,
                    closed_cb=self._on_closed,
                )
            )
        except Unavailable:
            raise
        except (OSError, nats.errors.Error) as exc:
            raise Unavailable(f"cannot connect to NATS at {url}: {exc}") from exc
        self._set_state(BusState.CONNECTED)

    async def _call(self, fn: Callable[[], Coroutine[Any, Any, T]]) -> T:
        """Run ``fn()`` on the asyncio side under the operation ceiling."""
        with trio.move_on_after(self._timeout) as scope:
            return await self._bridge.call(fn)
        assert scope.cancelled_caught
        raise Unavailable(f"NATS did not answer within {self._timeout}s")

    def _require_connected(self) -> None:
        if self._state is not BusState.CONNECTED or not self._nc.is_connected:
            raise Unavailable(f"NATS is {self._state.value}")

    async def aclose(self) -> None:
        """Drain subscriptions and close the connection (bounded by the operation timeout)."""
        for sub in self._subs.values():
            sub._close()
        if not self._nc.is_closed:
            try:
                await self._call(self._nc.close)
            except Unavailable:
                log.warning("nats close did not finish in %ss", self._timeout)
        self._set_state(BusState.CLOSED)

    # -- core NATS ------------------------------------------------------------------------
    async def publish(
        self, subject: str, payload: bytes, headers: Mapping[str, str] | None = None
    ) -> None:
        """At-most-once publish; ``Unavailable`` when not connected (nothing is buffered)."""
        self._require_connected()
        try:
            await self._call(lambda: self._nc.publish(subject, payload, headers=_headers(headers)))
        except nats.errors.Error as exc:
            raise Unavailable(f"NATS publish failed: {exc!r}") from exc

    async def subscribe(self, subject: str, *, buffer: int, queue: str = "") -> Subscription:
        """A ``Subscription`` holding at most ``buffer`` messages (see its full case)."""
        self._require_connected()
        sub = Subscription(subject, buffer)
        bridge = self._bridge
        handed = [0]

        async def on_message(msg: Msg) -> None:
            handed[0] += 1
            bridge.deliver(sub, _message(msg))

        try:
            nats_sub = await self._call(
                lambda: self._nc.subscribe(
                    subject,
                    queue=queue,
                    cb=on_message,
                    pending_msgs_limit=STAGING_MSGS,
                    pending_bytes_limit=STAGING_BYTES,
                )
            )
        except nats.errors.Error as exc:
            raise Unavailable(f"NATS subscribe failed: {exc!r}") from exc
        sub.sid = nats_sub._id
        self._subs[nats_sub._id] = sub
        self._nats_subs[nats_sub._id] = nats_sub
        self._handed[nats_sub._id] = handed
        return sub

    async def unsubscribe(self, subscription: Subscription) -> None:
        """Stop deliveries and end the subscription's iteration (after its buffer)."""
        nats_sub = self._nats_subs.pop(subscription.sid, None)  # type: ignore[call-overload]
        self._subs.pop(subscription.sid, None)  # type: ignore[call-overload]
        self._handed.pop(subscription.sid, None)  # type: ignore[call-overload]
        subscription._close()
        try:
            if nats_sub is not None and not self._nc.is_closed:
                await self._call(nats_sub.unsubscribe)
        except nats.errors.Error as exc:
            raise Unavailable(f"NATS unsubscribe failed: {exc!r}") from exc
        finally:
            self._bridge.forget(subscription)  # a late delivery meets a closed Subscription

    async def barrier(self) -> None:
        """Return once every message nats-py parsed before the call has been handed to its
        ``Subscription`` (see ``Bus.barrier``).

        nats-py parses the socket in order but queues each message on its subscription's
        own asyncio queue, emptied by one task per subscription: the order across
        subscriptions is lost there. On the asyncio thread this waits until each queue's
        callback has taken what the queue held at the call (reads nats-py's
        ``Subscription._pending_queue``, hence the pinned minor version); the trio side
        then runs the bridge's drains scheduled before the reply (``run_sync_soon`` is
        FIFO), so on return those messages are in the Subscriptions' buffers. A dropped
        message was reported (``_on_error`` → ``Gap``) synchronously while parsing."""
        handed, subs = self._handed, self._nats_subs

        async def settle() -> None:  # on the asyncio thread
            # Only the subscriptions with something queued: the others are settled already.
            targets = [
                (sid, cell, cell[0] + queued)
                for sid, nats_sub in list(subs.items())
                if (queued := nats_sub._pending_queue.qsize()) and (cell := handed.get(sid))
            ]
            # nats-py's task takes an item and runs our callback without suspending in
            # between, so a count below target means an item is still queued (or the
            # subscription went meanwhile: nothing more to wait for).
            # Those tasks are runnable already: yielding a loop turn is the wait (an Event
            # would cost every message a check in the callback).
            while any(cell[0] < target and sid in subs for sid, cell, target in targets):  # noqa: ASYNC110
                await asyncio.sleep(0)

        await self._call(settle)

    async def request(
        self,
        subject: str,
        payload: bytes,
        within: float,
        headers: Mapping[str, str] | None = None,
    ) -> Message:
        """The reply to a request within ``within`` seconds.

        Raises ``NoResponders``, ``RequestTimeout`` or ``Unavailable`` (never waits longer
        than ``within`` plus the bus's operation timeout).
        """
        self._require_connected()
        try:
            with trio.fail_after(within + self._timeout):
                msg = await self._bridge.call(
                    lambda: self._nc.request(
                        subject, payload, timeout=within, headers=_headers(headers)
                    )
                )
        except trio.TooSlowError as exc:
            raise RequestTimeout(f"no reply on {subject} within {within}s") from exc
        except nats.errors.NoRespondersError as exc:
            raise NoResponders(f"no responder on {subject}") from exc
        except nats.errors.TimeoutError as exc:
            raise RequestTimeout(f"no reply on {subject} within {within}s") from exc
        except nats.errors.Error as exc:
            raise Unavailable(f"NATS request failed: {exc!r}") from exc
        reply = _message(msg)
        if reply.headers and ERROR_HEADER in reply.headers:
            raise Unavailable(f"the responder on {subject} failed: {reply.headers[ERROR_HEADER]}")
        return reply

    async def serve_requests(
        self,
        subject: str,
        handler: Handler,
        *,
        buffer: int,
        queue: str = "",
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Answer each request on ``subject`` with ``await handler(message)``, in order.

        A handler exception is logged and answered with an ``ERROR_HEADER`` reply (the
        requester raises ``Unavailable``). Full case: requests beyond ``buffer`` are dropped
        and their requesters time out (a ``Gap`` is logged). Runs until cancelled.
        """
        sub = await self.subscribe(subject, buffer=buffer, queue=queue)
        try:
            task_status.started()
            async for item in sub:
                if not isinstance(item, Message):
                    log.warning("responder on %s dropped %d requests", subject, item.dropped)
                    continue
                if not item.reply:
                    continue
                try:
                    answer, reply_headers = await handler(item), None
                except Exception as exc:
                    log.exception("request handler on %s failed", subject)
                    answer, reply_headers = b"", {ERROR_HEADER: type(exc).__name__}
                try:
                    await self.publish(item.reply, answer, reply_headers)
                except Unavailable:
                    log.warning("could not answer a request on %s: NATS unavailable", subject)
        finally:
            with trio.CancelScope(shield=True), suppress(Unavailable):
                await self.unsubscribe(sub)

    # -- JetStream ------------------------------------------------------------------------
    async def ensure_stream(
        self,
        name: str,
        subjects: Sequence[str],
        *,
        max_age: float,
        max_msgs: int,
        max_bytes: int = -1,
        duplicate_window: float = 0.0,
        allow_direct: bool = False,
        republish: tuple[str, str] | None = None,
    ) -> None:
        """Create stream ``name`` over ``subjects`` or update its limits; ``max_age`` and
        ``duplicate_window`` in seconds (see ``Bus.ensure_stream``)."""
        self._require_connected()
        js = self._nc.jetstream(timeout=self._timeout)
        config = nats.js.api.StreamConfig(
            name=name,
            subjects=list(subjects),
            max_age=max_age,
            max_msgs=max_msgs,
            max_bytes=max_bytes,
            duplicate_window=duplicate_window,
            allow_direct=allow_direct or None,
            republish=(
                nats.js.api.RePublish(src=republish[0], dest=republish[1])
                if republish is not None
                else None
            ),
            storage=nats.js.api.StorageType.FILE,
            discard=nats.js.api.DiscardPolicy.OLD,
        )

        async def ensure() -> None:
            try:
                await js.add_stream(config)
            except nats.js.errors.BadRequestError:
                await js.update_stream(config)  # exists with other settings

        try:
            await self._call(ensure)
        except nats.errors.Error as exc:
            raise Unavailable(f"JetStream stream {name} failed: {exc!r}") from exc

    async def js_publish(
        self,
        subject: str,
        payload: bytes,
        msg_id: str,
        headers: Mapping[str, str] | None = None,
    ) -> PublishAck:
        """Store once: a repeat ``msg_id`` in the stream's duplicate window is not stored again."""
        self._require_connected()
        js = self._nc.jetstream(timeout=self._timeout)
        hdrs = {**(headers or {}), nats.js.api.Header.MSG_ID: msg_id}
        try:
            ack = await self._call(lambda: js.publish(subject, payload, headers=hdrs))
        except nats.errors.Error as exc:
            raise Unavailable(f"JetStream publish on {subject} failed: {exc!r}") from exc
        return PublishAck(ack.stream, ack.seq, bool(ack.duplicate))

    async def js_publish_chains(self, chains: Sequence[Sequence[JsPublish]]) -> list[ChainResult]:
        """See ``Bus.js_publish_chains``. One trip to the asyncio thread and back for the
        whole call (not one per publish): the chains run there as concurrent coroutines, so
        their publishes are pipelined on the connection while each chain waits for its own
        acks in turn. Every publish is bounded by the operation timeout (nats-py's request
        timeout); the call as a whole by that times the longest chain, plus one."""
        self._require_connected()
        if not chains:
            return []
        js = self._nc.jetstream(timeout=self._timeout)
        msg_id_header = nats.js.api.Header.MSG_ID

        async def chain(items: Sequence[JsPublish]) -> ChainResult:  # on the asyncio thread
            acks: list[PublishAck] = []
            for item in items:
                hdrs = {**(item.headers or {}), msg_id_header: item.msg_id}
                try:
                    ack = await js.publish(item.subject, item.payload, headers=hdrs)
                except nats.errors.Error as exc:
                    error = Unavailable(f"JetStream publish on {item.subject} failed: {exc!r}")
                    return acks, error
                acks.append(PublishAck(ack.stream, ack.seq, bool(ack.duplicate)))
            return acks, None

        async def run() -> list[ChainResult]:
            return list(await asyncio.gather(*(chain(items) for items in chains)))

        longest = max(len(items) for items in chains)
        with trio.move_on_after(self._timeout * (longest + 1)) as scope:
            return await self._bridge.call(run)
        assert scope.cancelled_caught
        raise Unavailable(f"NATS did not answer {longest} publishes in time")

    async def read_stream(
        self, stream: str, subject: str, start_seq: int, limit: int
    ) -> list[StoredMessage]:
        """Up to ``limit`` stored messages of ``subject`` with sequence ≥ ``start_seq``.

        One direct-get request per message on the asyncio side (no consumer state left on
        the server); fine for a resume window, not for bulk export.
        """
        self._require_connected()
        jsm = self._nc.jetstream(timeout=self._timeout)._jsm

        async def read() -> list[StoredMessage]:
            out: list[StoredMessage] = []
            seq = max(1, start_seq)
            while len(out) < limit:
                try:
                    raw = await jsm.get_msg(stream, seq=seq, subject=subject, next=True)
                except nats.js.errors.NotFoundError:
                    break
                assert raw.seq is not None
                out.append(
                    StoredMessage(
                        stream, raw.seq, raw.subject or "", raw.data or b"", raw.headers or None
                    )
                )
                seq = raw.seq + 1
            return out

        try:
            return await self._call(read)
        except nats.errors.Error as exc:
            raise Unavailable(f"JetStream read of {stream} failed: {exc!r}") from exc

    async def read_subjects(
        self, stream: str, subjects: Sequence[str], start_seq: int, limit: int
    ) -> StreamPage:
        """Up to ``limit`` stored messages of any of ``subjects`` with sequence ≥ ``start_seq``,
        in stream order, plus how many more matched (see ``Bus.read_subjects``).

        One ephemeral consumer per call (``filter_subjects``, no acks, in memory, deleted at
        the end; ``inactive_threshold`` removes it should the delete be lost), one pull of
        ``limit`` messages with ``no_wait``: three requests whatever the number of subjects.
        """
        self._require_connected()
        nc = self._nc
        timeout = self._timeout
        config: dict[str, Any] = {
            "deliver_policy": "by_start_sequence",
            "opt_start_seq": max(1, start_seq),
            "ack_policy": "none",
            "replay_policy": "instant",
            "filter_subjects": list(subjects),
            "mem_storage": True,
            "num_replicas": 1,
            "inactive_threshold": int(CONSUMER_IDLE * 1e9),
        }
        body = json.dumps({"stream_name": stream, "config": config}).encode()

        async def api(subject: str, payload: bytes) -> dict[str, Any]:
            reply = await nc.request(subject, payload, timeout=timeout)
            answer: dict[str, Any] = json.loads(reply.data)
            if "error" in answer:
                raise Unavailable(f"JetStream {subject}: {answer['error'].get('description')}")
            return answer

        async def read() -> StreamPage:
            info = await api(f"$JS.API.CONSUMER.CREATE.{stream}", body)
            name, pending = str(info["name"]), int(info["num_pending"])
            out: list[StoredMessage] = []
            try:
                want = min(limit, pending)
                if want > 0:
                    inbox = nc.new_inbox()
                    sub = await nc.subscribe(inbox, pending_msgs_limit=want + 8)
                    try:
                        pull = json.dumps({"batch": want, "no_wait": True}).encode()
                        await nc.publish(
                            f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{name}", pull, reply=inbox
                        )
                        while len(out) < want:
                            msg = await sub.next_msg(timeout=timeout)
                            headers = dict(msg.headers or {})
                            if nats.js.api.Header.STATUS in headers:
                                break  # 404 no messages / 408: nothing more now
                            meta = msg.metadata
                            pending = meta.num_pending
                            out.append(
                                StoredMessage(
                                    stream,
                                    meta.sequence.stream,
                                    msg.subject,
                                    msg.data or b"",
                                    headers or None,
                                )
                            )
                    finally:
                        await sub.unsubscribe()
            finally:
                with suppress(nats.errors.Error, Unavailable, ValueError):
                    await api(f"$JS.API.CONSUMER.DELETE.{stream}.{name}", b"")
            if not out and min(limit, int(info["num_pending"])) > 0:
                pending = 0  # matched at creation but gone before the pull (evicted)
            return StreamPage(out, pending)

        try:
            return await self._call(read)
        except (nats.errors.Error, ValueError, KeyError, TypeError) as exc:
            raise Unavailable(f"JetStream read of {stream} failed: {exc!r}") from exc


@asynccontextmanager
async def open_nats_bus(
    url: str | Sequence[str],
    *,
    name: str = "fechatter",
    op_timeout: float = OP_TIMEOUT,
    credentials: str | None = None,
    tls: ssl.SSLContext | None = None,
) -> AsyncIterator[NatsBus]:
    """Connect to NATS at ``url`` (one URL, or several servers of a NATS cluster); drain and
    close on exit.

    ``op_timeout``: seconds, the ceiling of every operation (connect, publish, subscribe, ...).
    ``credentials``: path of a ``.creds`` file (user JWT + NKey seed); ``tls``: the client's
    TLS context (CA, client certificate), both handed to nats-py as they are.
    Raises ``Unavailable`` when the first connection fails; later losses are retried forever
    by nats-py while operations raise ``Unavailable``.
    """
    servers = [url] if isinstance(url, str) else list(url)
    async with _open_bridge(name) as bridge:
        bus = NatsBus(bridge, op_timeout)
        try:
            await bus._connect(servers, name, credentials, tls)
            yield bus
        finally:
            with trio.CancelScope(shield=True):
                await bus.aclose()
