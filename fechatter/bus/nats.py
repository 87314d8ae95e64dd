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
import importlib.metadata
import inspect
import json
import logging
import ssl
import threading
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping, Sequence
from contextlib import asynccontextmanager, suppress
from typing import Any, TypeVar, cast

import nats
import nats.errors
import nats.js.api
import nats.js.errors
import trio
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription as NatsSubscription
from nats.aio.transport import TcpTransport

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
# nats-py queues each parsed message on its subscription's own asyncio queue, emptied by one
# task per subscription that calls our callback: a task wake-up and a queue round trip per
# message. We replace that queue by ``_Direct``, which hands the message to the bridge right
# in nats-py's parser (no nats-py queue, no task), so the only buffer between the socket and
# a ``Subscription`` is the bridge's hand-off deque (bounded by ``Subscription.buffer``, full
# case: a ``Gap``). nats-py still builds a queue of these limits before we replace it, and
# reports a slow consumer past ``STAGING_BYTES`` in flight, which ``_Direct`` keeps at 0.
STAGING_MSGS = 65_536
STAGING_BYTES = 64 * 1024 * 1024
# How long closing the bus waits for the asyncio thread to stop after the connection closed
# (it has nothing left to run by then). Past it the thread is abandoned and an error logged.
THREAD_JOIN_CEILING = 5.0  # seconds
# How long closing the bus waits for an asyncio task it cancelled to end (a connect still
# running, nats-py's reconnect/read/flush/ping tasks): cancellation is prompt unless
# Python 3.11's ``asyncio.wait_for`` swallowed it, which a second cancel ends.
TASK_END_CEILING = 1.0  # seconds
# Loop iterations closing the bus waits for aborted sockets to close (one is enough: the
# abort schedules the close as the next callback; a bound, not a timing).
ABORT_ITERATIONS = 10
# What closing the bus allows on the trio side past its asyncio steps' own bounds (thread
# hops, the abort's loop iterations): see ``_close_ceiling``.
CLOSE_SLACK = 1.0  # seconds
ERROR_HEADER = "Fechatter-Bus-Error"  # a responder's handler failed; the requester raises
CONSUMER_IDLE = 30.0  # seconds: a read_subjects consumer whose delete was lost goes after this


class _Lost:
    """Messages lost on the asyncio side: the bridge's hand-off queue was full, or nats-py
    reported a slow consumer. Becomes ``Subscription._mark_gap(count)`` on trio."""

    __slots__ = ("count",)

    def __init__(self, count: int) -> None:
        self.count = count


# The nats-py line whose private internals ``_bypass`` / ``_Direct`` / ``_Acks`` rely on
# (pyproject.toml pins nats-py>=2.16,<2.17): checked by ``check_nats_internals`` at startup.
NATS_PY_LINE = "2.16."
# What ``Client._process_msg`` must do for a callback subscription (nats-py 2.16): count the
# payload in ``_pending_size``, then hand the message to ``_pending_queue.put_nowait``.
_PROCESS_MSG_STEPS = ("sub._pending_size += payload_size", "sub._pending_queue.put_nowait(msg)")
_SUBSCRIPTION_ATTRIBUTES = ("_id", "_pending_queue", "_pending_size", "_wait_for_msgs_task")
# What closing the bus reads to close the socket on every path (``NatsBus.aclose``,
# ``_abort_transports``): a renamed one would bring back the leak silently (getattr defaults);
# and ``NatsBus.flush``'s PING with a future of its own.
_CLIENT_ATTRIBUTES = ("_transport", "_flush_queue", "_pongs", "_send_ping")
_TRANSPORT_ATTRIBUTES = ("_io_writer", "_bare_io_writer")


class NatsClientUnsupported(RuntimeError):
    """The installed nats-py is not the line whose private internals this module patches."""


def check_nats_internals(
    version: str | None = None,
    subscription_cls: type = NatsSubscription,
    process_msg: Callable[..., object] = Client._process_msg,
    client_cls: type = Client,
    transport_cls: type = TcpTransport,
) -> None:
    """Raise ``NatsClientUnsupported`` (naming what is missing and the pin to install) unless
    nats-py is the 2.16 line and has the private internals the receive and ack paths patch:
    a ``Subscription`` with ``_id``, ``_pending_queue``, ``_pending_size`` and
    ``_wait_for_msgs_task``, and a ``Client._process_msg`` that counts the payload in
    ``_pending_size`` and then calls ``_pending_queue.put_nowait`` (read from its source;
    skipped when the source is not installed — the version and attributes still are checked);
    and those closing the bus and ``flush`` read: a ``Client`` with ``_transport``,
    ``_flush_queue``, ``_pongs`` and ``_send_ping``, a ``TcpTransport`` with ``_io_writer``
    and ``_bare_io_writer``.
    ``version``: the installed nats-py version (default: read from its distribution).
    Called by ``open_nats_bus`` before it connects; cheap (no I/O but the metadata read; the
    probe ``Client`` and ``TcpTransport`` open nothing)."""
    found = version if version is not None else importlib.metadata.version("nats-py")
    problems: list[str] = []
    if not found.startswith(NATS_PY_LINE):
        problems.append(f"version {found} is not {NATS_PY_LINE}x")
    probe = subscription_cls(None, cb=None)
    missing = [name for name in _SUBSCRIPTION_ATTRIBUTES if not hasattr(probe, name)]
    if missing:
        problems.append(f"Subscription lacks {', '.join(missing)}")
    for cls, names in ((client_cls, _CLIENT_ATTRIBUTES), (transport_cls, _TRANSPORT_ATTRIBUTES)):
        instance = cls()
        missing = [name for name in names if not hasattr(instance, name)]
        if missing:
            problems.append(f"{cls.__name__} lacks {', '.join(missing)}")
    try:
        source = inspect.getsource(process_msg)
    except (OSError, TypeError):
        source = None  # no .py installed: rely on the version and attribute checks
    if source is not None:
        steps = [step for step in _PROCESS_MSG_STEPS if step not in source]
        if steps:
            problems.append(f"Client._process_msg no longer does {'; '.join(steps)}")
    if problems:
        raise NatsClientUnsupported(
            "fechatter.bus.nats patches private internals of nats-py 2.16 on its hot path "
            "(docs/cluster.md §10) and reads others to close its socket, and the installed "
            f"nats-py does not match: {'; '.join(problems)}. "
            "Install nats-py>=2.16,<2.17 (pyproject.toml)."
        )


def _bypass(nats_sub: Any, queue: _Direct | _Acks) -> None:
    """Make nats-py's parser hand ``nats_sub``'s messages to ``queue.put_nowait`` (asyncio
    thread): it replaces the subscription's queue, and the task nats-py started to empty it
    into the callback is cancelled (anything it took already went through the callback)."""
    nats_sub._pending_queue = queue
    task = nats_sub._wait_for_msgs_task
    if task is not None:
        task.cancel()


class _QueueShim:
    """The rest of ``asyncio.Queue`` that nats-py may call on a subscription's
    ``_pending_queue`` when ours hands each message on at once: always empty."""

    __slots__ = ()

    def qsize(self) -> int:
        return 0

    def empty(self) -> bool:
        return True

    def task_done(self) -> None:
        pass

    async def join(self) -> None:
        pass


class _Direct(_QueueShim):
    """Stands in for a nats-py subscription's ``_pending_queue`` (asyncio thread only).

    nats-py's parser calls ``put_nowait(msg)`` for each message of the subscription; this
    hands it to the bridge at once (``_Bridge.deliver``, whose bounded deque is the full
    case) instead of queueing it for a per-subscription task. Reads nats-py 2.16's private
    ``Subscription._pending_queue`` / ``_pending_size`` (hence the pinned minor version).
    """

    __slots__ = ("_bridge", "_nats_sub", "_sub")

    def __init__(self, bridge: _Bridge, sub: Subscription, nats_sub: Any) -> None:
        self._bridge = bridge
        self._sub = sub
        self._nats_sub = nats_sub

    def put_nowait(self, msg: Msg) -> None:
        self._nats_sub._pending_size -= len(msg.data)  # added by nats-py just before
        try:
            self._bridge.deliver(
                self._sub, Message(msg.subject, msg.data, msg.headers or None, msg.reply or "")
            )
        except Exception:  # never into nats-py's read loop: the message is lost, say so
            log.exception("handing a NATS message to trio failed")
            self._bridge.gap(self._sub, 1)


class _Acks(_QueueShim):
    """The JetStream acks of ``NatsBus.js_publish_chains`` (asyncio thread only): one reply
    subscription ``<inbox>.*`` per connection, each publish's reply subject one token under
    it, its future in ``waiting`` until the ack comes. Stands in for that subscription's
    nats-py ``_pending_queue`` like ``_Direct``: the parser resolves the future at once
    (no per-subscription queue, no task, no ``asyncio.wait_for`` per publish as in nats-py's
    ``request``). ``waiting`` holds one future per publish in flight; the publisher removes
    its own when it ends (answered, timed out or cancelled): bounded by the publishes in
    flight."""

    __slots__ = ("_nats_sub", "_next", "prefix", "waiting")

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix  # "<inbox>." : a reply subject is prefix + token
        self.waiting: dict[str, asyncio.Future[Msg]] = {}
        self._next = 0
        self._nats_sub: Any = None

    def reply_to(self, future: asyncio.Future[Msg]) -> tuple[str, str]:
        """A fresh token for ``future`` and its reply subject."""
        self._next += 1
        token = str(self._next)
        self.waiting[token] = future
        return token, self.prefix + token

    def put_nowait(self, msg: Msg) -> None:
        self._nats_sub._pending_size -= len(msg.data)  # added by nats-py just before
        future = self.waiting.get(msg.subject[len(self.prefix) :])
        if future is not None and not future.done():
            future.set_result(msg)


class _Bridge:
    """trio ↔ asyncio for nats-py: an asyncio loop on a thread of its own.

    trio → asyncio: ``asyncio.run_coroutine_threadsafe``; the future's done-callback wakes the
    waiting trio task through ``TrioToken.run_sync_soon`` (neither thread blocks on the other).
    A trio cancellation cancels the asyncio task. asyncio → trio: each subscription has a
    hand-off deque; the asyncio thread appends, and when it makes the deque non-empty it puts
    the deque on the bridge's ready deque; only when it makes *that* non-empty does it
    schedule one ``run_sync_soon(_drain)``, which hands everything queued by then, every
    subscription in the order it became ready, each in its own order, to the
    Subscriptions — one trio wake-up per socket read burst across all subscriptions, not
    per message nor per subscription. Full case of a subscription's deque (trio starved while
    ``buffer`` messages arrived): the message is dropped and counted in a ``_Lost`` marker at
    the deque's end, which becomes a ``Gap``. Bound of the ready deque: an entry is added
    only when a subscription's deque goes from empty to non-empty, so it holds one entry per
    subscription with something queued, plus the entry being drained; one more can be added
    each time the asyncio thread refills a deque that trio has just emptied within the same
    drain (a thread switch in a window of a few bytecodes); such an entry is drained in its
    turn, usually finding its deque empty. Chosen over trio-asyncio, which patches the
    ``asyncio`` module process-wide on import (docs/cluster.md "NATS client on trio").
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, token: trio.lowlevel.TrioToken) -> None:
        self.loop = loop
        self._token = token
        self._pending: dict[int, collections.deque[Message | _Lost]] = {}
        self._ready: collections.deque[tuple[Subscription, collections.deque[Message | _Lost]]] = (
            collections.deque()
        )

    async def call(self, fn: Callable[[], Coroutine[Any, Any, T]]) -> T:
        """``await fn()`` on the asyncio loop; its result, or its exception raised here.

        The asyncio task never ends with an exception: it returns it, and this re-raises it.
        A trio cancellation that meets the call's own failure (a request answered "no
        responders" as its caller gives up: nats-py's wait_for lets the answer win over the
        cancellation) leaves a cancelled future whose task ended with that failure; nobody
        would retrieve it, and asyncio would log "Task exception was never retrieved" at
        ERROR with a traceback (seen under load in tests/cluster/test_leave_procs.py).
        """

        async def settled() -> tuple[T | None, Exception | None]:
            try:
                return await fn(), None
            except Exception as exc:  # handed to the trio side; CancelledError passes
                return None, exc

        future = asyncio.run_coroutine_threadsafe(settled(), self.loop)
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
        if future.cancelled():  # the bus closed under the call (``NatsBus.aclose``)
            raise Unavailable("the NATS bus closed during the call")
        value, error = future.result()
        if error is not None:
            raise error
        return cast(T, value)

    def soon(self, fn: Callable[..., object], *args: Any) -> None:
        """Run ``fn(*args)`` on trio (from the asyncio thread)."""
        with suppress(trio.RunFinishedError):
            self._token.run_sync_soon(fn, *args)

    def _queue(self, sub: Subscription) -> collections.deque[Message | _Lost]:
        pending = self._pending.get(id(sub))
        if pending is None:
            pending = self._pending[id(sub)] = collections.deque()
        return pending

    def _became_ready(self, sub: Subscription, pending: collections.deque[Message | _Lost]) -> None:
        ready = self._ready
        ready.append((sub, pending))
        if len(ready) == 1:
            self.soon(self._drain)

    def deliver(self, sub: Subscription, message: Message) -> None:
        """Hand ``message`` to ``sub`` (from the asyncio thread); see the class's full case."""
        # deque append/popleft/len are atomic under the GIL; the deque holds at most
        # ``sub.buffer`` messages and one ``_Lost`` marker after them.
        pending = self._queue(sub)
        last: Message | _Lost | None = None
        if len(pending) >= sub.buffer:
            # Full when its length was read; trio may have drained it since (CI saw an
            # IndexError here drop a message with no Gap): then there is room.
            with suppress(IndexError):
                last = pending[-1]
        if last is None:
            pending.append(message)
        elif isinstance(last, _Lost):
            last.count += 1  # a lower bound if trio takes the marker right now
        else:
            pending.append(_Lost(1))
        if len(pending) == 1:
            self._became_ready(sub, pending)

    def gap(self, sub: Subscription, dropped: int) -> None:
        """``dropped`` messages of ``sub`` were lost before ``deliver`` (asyncio thread);
        0: the connection was lost (``Subscription.connection_lost``)."""
        pending = self._queue(sub)
        pending.append(_Lost(dropped))  # in order with the messages queued before it
        if len(pending) == 1:
            self._became_ready(sub, pending)

    def forget(self, sub: Subscription) -> None:
        self._pending.pop(id(sub), None)

    def _drain(self) -> None:
        # On trio. An item is removed only after it is handed over, an entry of the ready
        # deque only after its deque was found empty, and the asyncio side adds an entry
        # whenever it makes a subscription's deque non-empty and schedules a drain whenever it
        # makes the ready deque non-empty: nothing is stranded (an entry added while its
        # deque's previous entry is being drained is drained next, or finds it empty; a drain
        # finding the ready deque emptied by an earlier one does nothing).
        ready = self._ready
        while ready:
            sub, pending = ready[0]
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
            ready.popleft()


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


async def _end_tasks(tasks: Sequence[asyncio.Task[Any]]) -> None:
    """Cancel ``tasks`` and wait up to ``TASK_END_CEILING`` seconds for them to end (asyncio
    thread). A task still running after a cancel is cancelled again every ``RECONNECT_WAIT``
    seconds: Python 3.11's ``asyncio.wait_for`` returns the awaited result instead of raising
    when the cancel meets its completion, and nats-py's connect then goes on connecting."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + TASK_END_CEILING
    pending = {task for task in tasks if not task.done()}
    while pending:
        left = deadline - loop.time()
        if left <= 0:
            log.warning("%d nats tasks did not end when cancelled", len(pending))
            return
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=min(left, RECONNECT_WAIT))


def _socket_closed(writer: asyncio.StreamWriter) -> bool:
    """Whether ``writer``'s socket is closed: its transport reports no ``"socket"``, or one
    whose ``fileno()`` is -1 (a selector transport keeps reporting its socket once closed;
    a TLS transport reports the socket of the plain transport under it)."""
    sock = writer.transport.get_extra_info("socket")
    return sock is None or sock.fileno() == -1


def _close_ceiling(timeout: float) -> float:
    """Seconds ``NatsBus.aclose`` waits for its asyncio side, for an operation timeout of
    ``timeout`` seconds: nats-py's close (``timeout``), the two task waits
    (``TASK_END_CEILING`` each) and ``CLOSE_SLACK``."""
    return timeout + 2 * TASK_END_CEILING + CLOSE_SLACK


def _abort_transports(nc: Client) -> list[asyncio.StreamWriter]:
    """Abort the socket (and TLS) transports of ``nc``'s connection, whatever its state;
    the writers whose loss to await (asyncio thread, synchronous). Reads nats-py 2.16's
    private ``Client._transport`` and ``TcpTransport._io_writer`` / ``_bare_io_writer`` (the
    TLS and the plain stream of one socket); aborting twice does nothing."""
    transport = nc._transport
    writers: list[asyncio.StreamWriter] = []
    for name in ("_io_writer", "_bare_io_writer"):
        writer = getattr(transport, name, None)
        if isinstance(writer, asyncio.StreamWriter) and writer not in writers:
            writer.transport.abort()
            writers.append(writer)
    return writers


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
        self._acks: _Acks | None = None  # js_publish_chains' reply subscription (asyncio)
        # Made on the asyncio thread on first use; held while the reply subscription is made,
        # so concurrent first calls make one (nats-py's subscribe can suspend when its
        # flush queue is full).
        self._acks_lock: asyncio.Lock | None = None
        # The asyncio task of ``_connect`` (set on the asyncio thread): trio stops waiting for
        # it when cancelled or past the timeout, but it may still be running then.
        self._connect_task: asyncio.Task[Any] | None = None

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
            # ``repr(exc)`` now, not the exception as an argument: a log record kept by a
            # handler (pytest's capture, a MemoryHandler) would keep its traceback's frames,
            # and through them this client and the bus, alive.
            self._failed_reconnects += 1
            if self._failed_reconnects > 1:
                log.debug("nats reconnect failed: %s", repr(exc))
                return
            log.warning(
                "nats reconnect failed: %s; retrying every %gs (logged at DEBUG until back)",
                repr(exc),
                RECONNECT_WAIT,
            )
            return
        log.warning("nats client error: %s", repr(exc))

    async def _connect(
        self,
        servers: list[str],
        name: str,
        credentials: str | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        url = ",".join(redact_url(s) for s in servers)

        async def connect() -> None:  # on the asyncio thread
            self._connect_task = asyncio.current_task()
            await self._nc.connect(
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
            # From here, not from trio once the call returned: a loss right after the
            # connect queues its RECONNECTING behind this (``soon`` runs in order), where
            # trio's CONNECTED could land after it and stay.
            self._bridge.soon(self._set_state, BusState.CONNECTED)

        try:
            await self._call(connect)
        except Unavailable:
            raise
        except (OSError, nats.errors.Error) as exc:
            raise Unavailable(f"cannot connect to NATS at {url}: {exc}") from exc

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
        """End the subscriptions' iterations and close the connection; on return its socket
        is closed, whatever state the connection was in.

        On the asyncio thread, in order: a connect still running is cancelled and awaited
        (``TASK_END_CEILING``; else it would open a socket after the close); nats-py's
        ``close`` runs, bounded by the operation timeout (it flushes what is pending, which
        a server that stopped reading holds forever, and which raises ``OSError`` when the
        connection is already lost); every task left on the loop (nats-py's reconnect, read,
        flush and ping tasks, calls in flight, which raise ``Unavailable``) is cancelled and
        awaited (``TASK_END_CEILING``); and whatever happened before, the connection's
        transports are aborted and their loss awaited, so no socket outlives the bus's loop
        (docs/cluster.md "NATS client on trio"). Bounded on the trio side by
        ``_close_ceiling(timeout)`` seconds: the operation timeout, twice
        ``TASK_END_CEILING`` and ``CLOSE_SLACK``. Never raises; a close of nats-py's that
        timed out or failed is one warning line."""
        for sub in self._subs.values():
            sub._close()
        nc, timeout = self._nc, self._timeout

        async def shut() -> str | None:
            """On the asyncio thread: why nats-py's close did not finish, or None if it
            did or had nothing to close. The transports are aborted on return."""
            me = asyncio.current_task()
            failure: str | None = None
            try:
                if self._connect_task is not None:
                    await _end_tasks([self._connect_task])
                # None: connect never got as far as nats-py's internals, so no socket was
                # opened and there is nothing to close.
                if nc._flush_queue is not None:
                    try:
                        async with asyncio.timeout(timeout):
                            await nc.close()
                    except TimeoutError:
                        failure = f"did not finish in {timeout}s"
                    except (OSError, nats.errors.Error) as exc:
                        # With the server gone and bytes pending, nats-py's close drains the
                        # lost connection: ``ConnectionResetError('Connection lost')``.
                        failure = f"failed: {exc!r}"
                await _end_tasks([t for t in asyncio.all_tasks() if t is not me])
            finally:  # cancelled too (the loop stopping): synchronous, nothing awaited
                writers = _abort_transports(nc)
            # The abort closes each socket in a callback on the loop's next iteration
            # (``_call_connection_lost``). Not ``writer.wait_closed()``: its future is the one
            # nats-py's close awaited, cancelled with it when the close timed out.
            for _ in range(ABORT_ITERATIONS):
                if all(_socket_closed(writer) for writer in writers):
                    break
                await asyncio.sleep(0)
            else:
                log.warning("an aborted nats socket was not closed")
            return failure

        ceiling = _close_ceiling(timeout)
        with trio.move_on_after(ceiling) as scope:
            try:
                failure = await self._bridge.call(shut)
            except Exception:  # never out of a close (an error boundary: a bug of ours)
                log.exception("closing the nats connection failed")
            else:
                if failure is not None:
                    log.warning("nats close %s; its connection was aborted", failure)
        if scope.cancelled_caught:  # the asyncio task is cancelled: its ``finally`` aborts
            log.warning("closing the nats bus did not finish in %ss; gave up waiting", ceiling)
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
        nc = self._nc

        async def unused(msg: Msg) -> None:  # nats-py wants a callback; _Direct bypasses it
            bridge.deliver(sub, _message(msg))

        async def subscribe() -> Any:  # on the asyncio thread
            nats_sub = await nc.subscribe(
                subject,
                queue=queue,
                cb=unused,
                pending_msgs_limit=STAGING_MSGS,
                pending_bytes_limit=STAGING_BYTES,
            )
            staged, direct = nats_sub._pending_queue, _Direct(bridge, sub, nats_sub)
            _bypass(nats_sub, direct)
            # Whatever arrived before the swap (none so far: the SUB is just sent) goes first.
            while not staged.empty():
                direct.put_nowait(staged.get_nowait())
            return nats_sub

        try:
            nats_sub = await self._call(subscribe)
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
        try:
            if nats_sub is not None and not self._nc.is_closed:
                await self._call(nats_sub.unsubscribe)
        except nats.errors.Error as exc:
            raise Unavailable(f"NATS unsubscribe failed: {exc!r}") from exc
        finally:
            self._bridge.forget(subscription)  # a late delivery meets a closed Subscription

    async def flush(self) -> None:
        """A PING/PONG round trip: on return the server has processed every ``SUB``/``PUB``
        this connection sent before (see ``Bus.flush``). Raises ``Unavailable`` when not
        connected, when the connection is lost meanwhile, or past the operation timeout
        (seconds, the bus's ``op_timeout``).

        Not nats-py's ``flush``: when its wait is cancelled (a timeout, or the caller's trio
        cancellation) it cancels the PONG's future but leaves it queued, and the late PONG's
        ``set_result`` on it raises in the read loop, which ends: the connection still says
        connected and nothing is received any more (nats-py 2.16 ``_process_pong``). Here
        the PONG's future is never cancelled (the wait is shielded from it): a PONG that comes
        after we stopped waiting completes it harmlessly."""
        self._require_connected()
        nc = self._nc

        async def ping() -> None:  # on the asyncio thread
            if not nc.is_connected:
                raise nats.errors.ConnectionReconnectingError
            pong: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
            await nc._send_ping(pong)  # queued in nc._pongs, answered in order
            await asyncio.shield(pong)  # a reconnect drops it: the timeout below ends us

        try:
            await self._call(ping)
        except nats.errors.Error as exc:
            raise Unavailable(f"NATS flush failed: {exc!r}") from exc

    async def barrier(self) -> None:
        """Return once every message nats-py parsed before the call has been handed to its
        ``Subscription`` (see ``Bus.barrier``).

        nats-py's parser hands each message to the bridge as it parses it (``_Direct``: no
        per-subscription queue or task in between), so by the time a coroutine runs on the
        asyncio thread, everything parsed before has been queued on the bridge with its
        drain scheduled; the trio side runs those drains before the reply's wake-up
        (``run_sync_soon`` is FIFO), so on return those messages are in the Subscriptions'
        buffers. A dropped message was reported (``Gap``) synchronously while parsing."""

        async def settle() -> None:  # on the asyncio thread: the round trip is the barrier
            return None

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
        acks in turn. Each publish is a plain ``PUB`` with a reply subject under one reply
        subscription (``_Acks``) and its ack is read straight from the JSON (no nats-py
        request, ``wait_for`` or ``PubAck`` per publish). Every publish is bounded by the
        operation timeout; the call as a whole by that times the longest chain, plus one."""
        self._require_connected()
        if not chains:
            return []
        nc, timeout = self._nc, self._timeout
        msg_id_header = nats.js.api.Header.MSG_ID

        async def acks() -> _Acks:  # on the asyncio thread
            if self._acks is not None:
                return self._acks
            if self._acks_lock is None:
                self._acks_lock = asyncio.Lock()
            async with self._acks_lock:
                if self._acks is None:
                    box = _Acks(nc.new_inbox() + ".")

                    async def unused(msg: Msg) -> None:  # nats-py wants a callback
                        box.put_nowait(msg)

                    nats_sub = await nc.subscribe(box.prefix + "*", cb=unused)
                    box._nats_sub = nats_sub
                    _bypass(nats_sub, box)
                    self._acks = box
                return self._acks

        async def chain(box: _Acks, items: Sequence[JsPublish]) -> ChainResult:
            loop = asyncio.get_running_loop()
            stored: list[PublishAck] = []
            for item in items:
                future: asyncio.Future[Msg] = loop.create_future()
                token, reply = box.reply_to(future)
                try:
                    hdrs = {**(item.headers or {}), msg_id_header: item.msg_id}
                    await nc.publish(item.subject, item.payload, reply=reply, headers=hdrs)
                    async with asyncio.timeout(timeout):
                        msg = await future
                    answer = json.loads(msg.data) if msg.data else {}
                    if "error" in answer or "seq" not in answer:
                        status = (msg.headers or {}).get(nats.js.api.Header.STATUS, "")
                        why = answer.get("error", {}).get("description") or status or "no ack"
                        raise Unavailable(f"JetStream publish on {item.subject} failed: {why}")
                    ack = PublishAck(
                        str(answer.get("stream", "")),
                        int(answer["seq"]),
                        bool(answer.get("duplicate")),
                    )
                except TimeoutError:
                    error = Unavailable(
                        f"JetStream publish on {item.subject} failed: no ack within {timeout}s"
                    )
                    return stored, error
                except (nats.errors.Error, ValueError, TypeError, AttributeError) as exc:
                    error = Unavailable(f"JetStream publish on {item.subject} failed: {exc!r}")
                    return stored, error
                except Unavailable as exc:
                    return stored, exc
                finally:
                    box.waiting.pop(token, None)
                stored.append(ack)
            return stored, None

        async def run() -> list[ChainResult]:
            box = await acks()
            return list(await asyncio.gather(*(chain(box, items) for items in chains)))

        longest = max(len(items) for items in chains)
        try:
            with trio.move_on_after(timeout * (longest + 1)) as scope:
                return await self._bridge.call(run)
        except nats.errors.Error as exc:  # the reply subscription could not be made
            raise Unavailable(f"JetStream publish failed: {exc!r}") from exc
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
    by nats-py while operations raise ``Unavailable``. Raises ``NatsClientUnsupported``
    before connecting when the installed nats-py is not the line this module patches.
    """
    check_nats_internals()  # before any thread or socket: a mismatched nats-py fails loudly
    servers = [url] if isinstance(url, str) else list(url)
    async with _open_bridge(name) as bridge:
        bus = NatsBus(bridge, op_timeout)
        try:
            await bus._connect(servers, name, credentials, tls)
            yield bus
        finally:
            with trio.CancelScope(shield=True):
                await bus.aclose()
