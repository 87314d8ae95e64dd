"""``NatsBus``: the ``Bus`` protocol over nats-py (asyncio), driven from trio.

nats-py is an asyncio library; trio code reaches it through ``_Bridge`` (trio-asyncio):
``call`` runs a coroutine on the asyncio side and returns its result to trio,
``deliver`` / ``soon`` hand messages and state changes from the asyncio side to trio.
Every nats-py exception is translated into ``fechatter.errors.Unavailable`` (or its
subclasses in ``base.py``) here; nothing else imports nats-py.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping, Sequence
from contextlib import asynccontextmanager, suppress
from typing import Any, TypeVar

import nats
import nats.errors
import nats.js.api
import nats.js.errors
import trio
import trio_asyncio
from nats.aio.client import Client
from nats.aio.msg import Msg

from fechatter.bus.base import (
    BusState,
    Handler,
    Message,
    NoResponders,
    PublishAck,
    RequestTimeout,
    StoredMessage,
    Subscription,
)
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
ERROR_HEADER = "Fechatter-Bus-Error"  # a responder's handler failed; the requester raises


class _Bridge:
    """trio ↔ asyncio for nats-py, by trio-asyncio: asyncio's loop runs inside trio's.

    trio → asyncio: ``trio_asyncio.aio_as_trio`` runs a coroutine as an asyncio task and
    awaits it from trio (cancellation crosses both ways). asyncio → trio: nats-py's
    callbacks run on the same thread inside trio's run, so they call the trio side
    (``Subscription._offer``, state changes) directly. Chosen over nats-py on its own
    asyncio thread by measurement (docs/cluster.md "NATS client on trio").
    """

    async def call(self, fn: Callable[[], Coroutine[Any, Any, T]]) -> T:
        result: T = await trio_asyncio.aio_as_trio(fn)()
        return result

    def soon(self, fn: Callable[..., object], *args: Any) -> None:
        fn(*args)

    def deliver(self, sub: Subscription, message: Message) -> None:
        sub._offer(message)


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
        self._bridge.soon(
            self._set_state, BusState.CLOSED if self._nc.is_closed else BusState.RECONNECTING
        )

    async def _on_reconnected(self) -> None:
        self._bridge.soon(self._set_state, BusState.CONNECTED)

    async def _on_closed(self) -> None:
        self._bridge.soon(self._set_state, BusState.CLOSED)

    async def _on_error(self, exc: Exception) -> None:
        if isinstance(exc, nats.errors.SlowConsumerError) and exc.sub is not None:
            sub = self._subs.get(exc.sub._id)
            if sub is not None:
                self._bridge.soon(sub._mark_gap, 1)
            return
        log.warning("nats client error: %r", exc)

    async def _connect(self, url: str, name: str) -> None:
        try:
            await self._call(
                lambda: self._nc.connect(
                    servers=[url],
                    name=name,
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

        async def on_message(msg: Msg) -> None:
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
        return sub

    async def unsubscribe(self, subscription: Subscription) -> None:
        """Stop deliveries and end the subscription's iteration (after its buffer)."""
        nats_sub = self._nats_subs.pop(subscription.sid, None)  # type: ignore[call-overload]
        self._subs.pop(subscription.sid, None)  # type: ignore[call-overload]
        subscription._close()
        if nats_sub is not None and not self._nc.is_closed:
            try:
                await self._call(nats_sub.unsubscribe)
            except nats.errors.Error as exc:
                raise Unavailable(f"NATS unsubscribe failed: {exc!r}") from exc

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
        self, name: str, subjects: Sequence[str], *, max_age: float, max_msgs: int
    ) -> None:
        """Create stream ``name`` over ``subjects`` or update its limits; ``max_age`` seconds."""
        self._require_connected()
        js = self._nc.jetstream(timeout=self._timeout)
        config = nats.js.api.StreamConfig(
            name=name,
            subjects=list(subjects),
            max_age=max_age,
            max_msgs=max_msgs,
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


@asynccontextmanager
async def open_nats_bus(
    url: str,
    *,
    name: str = "fechatter",
    op_timeout: float = OP_TIMEOUT,
) -> AsyncIterator[NatsBus]:
    """Connect to NATS at ``url``; drain and close on exit.

    ``op_timeout``: seconds, the ceiling of every operation (connect, publish, subscribe, ...).
    Raises ``Unavailable`` when the first connection fails; later losses are retried forever
    by nats-py while operations raise ``Unavailable``.
    """
    try:
        async with trio_asyncio.open_loop():
            bus = NatsBus(_Bridge(), op_timeout)
            try:
                await bus._connect(url, name)
                yield bus
            finally:
                with trio.CancelScope(shield=True):
                    await bus.aclose()
    except BaseExceptionGroup as group:
        # trio-asyncio's loop is a nursery, an implementation detail of this context manager:
        # an error from the body or from connecting comes out of it as nested one-item groups.
        # Hand it back as raised (trio's "collapse" recipe); a real multi-error stays a group.
        inner: BaseException = group
        while isinstance(inner, BaseExceptionGroup) and len(inner.exceptions) == 1:
            inner = inner.exceptions[0]
        if inner is group:
            raise
        raise inner from None
