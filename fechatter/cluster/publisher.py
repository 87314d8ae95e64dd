"""``OutboxPublisher``: the chat outbox's rows onto JetStream (issue 12, docs/cluster.md §4,
plan step B2). A standalone component: nothing wires it into the actors or the app yet.

One publisher per api node. The chat's owner calls ``notify(chat_id)`` after each commit
that wrote outbox rows (non-blocking, coalescing); a worker then publishes the chat's rows in
``event_seq`` order — for each event first a membership notice per user in ``notify`` on
``<prefix>.ev.user.<uid>``, then the event on ``<prefix>.ev.chat.<chat_id>``, each a JetStream
publish deduplicated by ``Nats-Msg-Id`` (``c:<chat>:<seq>``, notices
``n:c:<chat>:<seq>:<uid>``) with the headers ``Fx-Event`` and ``Fx-Seq`` (and
``Fx-Committed`` when the commit time is known, to time the fan-out) — and deletes them
after their acks, until the chat has none left.

Groups (docs/cluster.md "Built: cutting the cluster's cost per message"): one group worker
takes every chat queued at that moment (up to ``group``) and publishes them in one
transaction — ``outbox.claim_many`` (one statement: a ``pg_try_advisory_xact_lock`` per
chat, then each locked chat's next batch), ``Bus.js_publish_chains`` (one trip to the NATS
thread: the chats' publishes pipelined, each chat's rows one after the other, each sent after
the previous one's ack), one DELETE of the rows of the chats whose every publish was
acknowledged, COMMIT. Chats queued meanwhile join its next pass. A chat the pass could not
publish (busy, a failed publish, the whole pass unavailable, timed out or refused) goes to
one of ``workers - 1`` one-chat workers, which drain it as below (``publish_chat``: backoff,
halving, quarantine); with ``workers`` 1 the group worker drains it itself.

One publish in flight per chat: locally a chat is in at most one worker; across nodes each
batch runs in one PostgreSQL transaction holding ``pg_try_advisory_xact_lock`` on ``c:<chat>``
(``outbox.claim`` / ``claim_many``), so two publishers of one chat (a takeover, two sweepers)
never interleave: the second finds the lock taken and retries, or finds the rows gone.
JetStream therefore stores a chat's events in ``event_seq`` order. A batch whose publishes
were acknowledged but whose DELETE failed is published again later; JetStream answers
"duplicate" (same msg id, within the 30 s window) and stores nothing.

A sweeper (every ``sweep_every`` seconds) queues the chats whose rows are older than
``sweep_age`` seconds: the rows of an owner that died between commit and publish, or of a
notify dropped because the pending set was full.

A batch is at most ``batch`` rows; one that does not finish within the storage's operation
timeout (``OperationTimedOut``: rolled back, retried) makes the chat's next batch half as
big, down to 1 row, and each batch that commits doubles it again, up to ``batch`` — so a
slow database or NATS shrinks the transaction until it fits, instead of retrying the same
too-big batch for ever. Sizes are kept per chat, only while below ``batch``.

A chat whose batch fails with anything other than "busy" or ``Unavailable`` (a row the
database refuses, a malformed ``$ref``, a bug) is quarantined: logged once per streak at
ERROR with the chat id and the error type, then left alone for ``quarantine_first`` seconds,
doubling up to ``QUARANTINE_MAX``; notifies meanwhile are deferred and the sweeper skips it.
The worker goes on with other chats, so one bad row never stops the publisher (nor, as the
same row is every node's leftover, every node). A publish that succeeds ends the quarantine.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, fields
from typing import TypeVar

import trio

from fechatter import events
from fechatter.bus.base import Bus, BusState, JsPublish
from fechatter.cluster import events as wire
from fechatter.errors import Unavailable
from fechatter.storage import outbox
from fechatter.storage import workspace_writes as ws_outbox
from fechatter.storage.outbox import PendingEvent
from fechatter.storage.postgres import OperationTimedOut, PostgresStorage, run_op
from fechatter.storage.postgres_pool import Connection

log = logging.getLogger(__name__)

T = TypeVar("T")

# The stream (docs/cluster.md §4 "Stream"): one definition, ``events.StreamSpec``.
STREAM = wire.STREAM
MAX_BYTES = wire.MAX_BYTES  # 1 GiB (the setting stream_max_bytes, not yet in config)
# The publisher.
BATCH = 100  # rows per transaction (lock, read, publish each, delete, commit), at most
GROUP = 64  # chats one worker claims and publishes in one transaction, at most
WORKERS = 8  # connections the publisher uses at most: one group worker (every queued chat
# in one transaction) and WORKERS - 1 workers that drain, one chat each, the chats a group
# pass could not publish (busy, failed: with backoff); each holds one pooled connection …
POOL_SHARE = 4  # … and at most pool_size // POOL_SHARE of them (≥ 1): the heartbeat, the
# writes and the reads keep the rest of the pool
PENDING_MAX = 10_000  # chats queued for a worker; full case: see ``notify``
SWEEP_EVERY = 2.0  # seconds between sweeps
SWEEP_AGE = 2.0  # seconds: rows older than this are leftovers
SWEEP_LIMIT = 50  # chats queued per sweep, the oldest rows first
BACKOFF_FIRST = 0.1  # seconds before the first retry of a failed chat; doubles …
BACKOFF_MAX = 2.0  # … up to this
QUARANTINE_FIRST = 1.0  # seconds a chat whose batch failed unexpectedly is left alone; doubles …
QUARANTINE_MAX = 300.0  # … up to this (the row needs an operator or a fix; retries stay cheap)


class _Busy(Exception):
    """Another transaction holds the chat's publisher lock."""


@dataclass(frozen=True, slots=True)
class PublisherStatistics:
    """Counters since start: ``stored`` events JetStream stored, ``duplicates`` it had
    already (a republish), ``notices`` stored, ``removed`` rows deleted after their acks,
    ``failures`` batches that failed (NATS/PostgreSQL unavailable, or the delete failed),
    ``busy`` batches that found another publisher on the chat, ``dropped`` notifies refused
    by a full pending set, ``sweeps`` completed, ``pending`` chats queued now, ``active``
    chats being published now."""

    stored: int = 0
    duplicates: int = 0
    notices: int = 0
    removed: int = 0
    failures: int = 0
    busy: int = 0
    dropped: int = 0
    sweeps: int = 0
    errors: int = 0
    pending: int = 0
    active: int = 0
    quarantined: int = 0


_COUNTERS = tuple(
    f.name
    for f in fields(PublisherStatistics)
    if f.name not in ("pending", "active", "quarantined")
)


@dataclass(eq=False)
class _Progress:
    """One queued or active chat's notifies: ``issued`` so far, ``covered`` by a completed
    pass (one that started after them); ``over`` once its drain ended. ``changed`` is set
    (and replaced) when ``covered`` or ``over`` change: ``wait_notified`` wakes only for its
    own chat, not on every counter of the publisher."""

    issued: int = 0
    covered: int = 0
    over: bool = False
    changed: trio.Event = field(default_factory=trio.Event)

    def cover(self, start: int) -> None:
        if start > self.covered:
            self.covered = start
            self._wake()

    def end(self) -> None:
        self.over = True
        self._wake()

    def _wake(self) -> None:
        self.changed.set()
        self.changed = trio.Event()


class OutboxPublisher:
    """Publishes the chat outbox of ``storage`` (PostgreSQL) on ``bus``; run it with
    ``run`` in a nursery (``await nursery.start(publisher.run)``).

    ``prefix``: the subject prefix (setting ``nats_prefix``); ``stream``: the JetStream
    stream, created or updated at start over ``<prefix>.ev.>`` with §4's limits and
    republish to ``<prefix>.rt.>``; ``max_bytes`` its byte limit. The other keywords are the
    module constants above (seconds, counts), overridable for tests.
    """

    def __init__(
        self,
        storage: PostgresStorage,
        bus: Bus,
        *,
        prefix: str = "fechatter",
        stream: str = STREAM,
        max_bytes: int = MAX_BYTES,
        workers: int = WORKERS,
        pending_max: int = PENDING_MAX,
        batch: int = BATCH,
        sweep_every: float = SWEEP_EVERY,
        sweep_age: float = SWEEP_AGE,
        sweep_limit: int = SWEEP_LIMIT,
        quarantine_first: float = QUARANTINE_FIRST,
        group: int = GROUP,
    ) -> None:
        if min(workers, pending_max, batch, sweep_limit, group) < 1:
            raise ValueError("workers, pending_max, batch, sweep_limit and group must be ≥ 1")
        self._storage = storage
        self._bus = bus
        self.prefix = prefix
        self.stream = stream
        self._max_bytes = max_bytes
        # Each worker holds a pooled connection for a whole batch: never the whole pool.
        self.workers = max(1, min(workers, storage.pool_size // POOL_SHARE))
        self._pending_max = pending_max
        self._batch = batch
        self._sweep_every = sweep_every
        self._sweep_age = sweep_age
        self._sweep_limit = sweep_limit
        self._quarantine_first = quarantine_first
        self._group = group
        # Chats whose last batch failed unexpectedly: chat id → (retry not before, in trio
        # time; the current delay). At most ``pending_max`` entries (full case: a further
        # bad chat is not recorded and is retried at the sweeper's pace); an entry ends with
        # the chat's next successful publish.
        self._quarantine: dict[int, tuple[float, float]] = {}
        # Chats whose batch size is below ``batch`` (halved after a timeout): chat id → rows.
        # At most ``pending_max`` entries (full case: a further chat keeps the full size and
        # is retried with it, as before); an entry ends when the size is back at ``batch``.
        self._sizes: dict[int, int] = {}
        # A chat is in at most one of: queued (in the channel), active (in a worker). A
        # notify for an active chat marks it ``again``: one more pass after the current one.
        self._send, self._receive = trio.open_memory_channel[int](pending_max)
        # Chats the group worker hands to the one-chat workers (active chats, each once).
        # Full case: the group worker drains the chat itself (slower, never lost).
        self._alone_send, self._alone_receive = trio.open_memory_channel[tuple[int, bool]](
            pending_max
        )
        self._queued: set[int] = set()
        self._active: set[int] = set()
        self._again: set[int] = set()
        # Per queued or active chat: notifies issued and the ones a completed pass covers
        # (``wait_notified``); ends with the chat's drain. Bounded like the sets above.
        self._progress: dict[int, _Progress] = {}
        # Per queued or active chat: the wall-clock commit time of its oldest event not yet
        # claimed by a batch (``notify``'s ``committed``), sent as ``Fx-Committed`` to time
        # the fan-out (``metrics.FanoutTimes``). Bounded like the sets above (dropped when a
        # batch claims or the drain ends); a sweeper-found chat has none (header left out).
        self._committed: dict[int, float] = {}
        self._stream_ok = False
        self.ready = trio.Event()  # set once the stream exists (first ensure_stream)
        self._changed = trio.Event()
        # The counters of ``PublisherStatistics`` that only grow (``statistics`` adds the
        # sets' sizes): a plain dict, bumped in place.
        self._counts = dict.fromkeys(_COUNTERS, 0)

    # -- subjects ---------------------------------------------------------------------------
    def chat_subject(self, chat_id: int) -> str:
        """``<prefix>.ev.chat.<chat_id>``: where a chat's events are stored."""
        return f"{self.prefix}.ev.chat.{chat_id}"

    def user_subject(self, user_id: int) -> str:
        """``<prefix>.ev.user.<user_id>``: where a user's membership notices are stored."""
        return f"{self.prefix}.ev.user.{user_id}"

    @property
    def bus_state(self) -> BusState:
        """The NATS connection's state now."""
        return self._bus.state

    # -- workspace topics (issue 14; docs/cluster.md "Built: workspace events on the cluster")
    async def publish_workspace(self, workspace_id: int) -> int:
        """Publish the workspace's outbox rows until none are left; the number published.
        Each row goes to each recipient's ``<prefix>.ev.user.<uid>`` (``Nats-Msg-Id``
        ``w:<ws>:<seq>:<uid>``, headers ``Fx-Event``, ``Fx-Seq``), one after the other, in
        ``event_seq`` order, under the workspace's advisory lock (one publisher per
        workspace across nodes); rows are deleted after their acks. Another holder of the
        lock: returns (it re-reads until no rows remain, so it covers ours). Raises
        ``Unavailable`` (NATS or PostgreSQL; the rows stay and are retried by the sweeper)."""
        total = 0
        while True:
            if self._bus.state is not BusState.CONNECTED:
                raise Unavailable(f"NATS is {self._bus.state.value}")
            if not self._stream_ok:
                await self._ensure_stream()

            async def run(conn: Connection) -> int | None:
                await conn.execute("BEGIN")
                batch = await run_op(conn, ws_outbox.claim(workspace_id, self._batch))
                if batch is None:
                    await conn.execute("ROLLBACK")
                    return None
                for event in batch:
                    headers = {"Fx-Event": event.name, "Fx-Seq": str(event.event_seq)}
                    for uid in event.to:
                        msg_id = f"w:{workspace_id}:{event.event_seq}:{uid}"
                        ack = await self._bus.js_publish(
                            self.user_subject(uid), event.payload, msg_id, headers
                        )
                        self._count(**({"duplicates": 1} if ack.duplicate else {"stored": 1}))
                if batch:
                    seqs = [e.event_seq for e in batch]
                    self._count(removed=await run_op(conn, ws_outbox.remove(workspace_id, seqs)))
                await conn.execute("COMMIT")
                return len(batch)

            n = await self._storage._call(run)
            if n is None:
                self._count(busy=1)
                return total
            total += n
            if n == 0:
                return total

    async def sweep_workspaces(self) -> list[int]:
        """Publish the workspaces whose rows are older than ``sweep_age`` (a crash or an
        outage left them); the workspaces found. Failures are logged and left for the next
        sweep."""
        if self._bus.state is not BusState.CONNECTED:
            return []
        try:
            found = await self._storage._read_op(
                ws_outbox.stale(self._sweep_age, self._sweep_limit)
            )
        except Unavailable as exc:
            log.warning("outbox sweep (workspaces) failed: %s", exc)
            return []
        for workspace_id in found:
            try:
                await self.publish_workspace(workspace_id)
            except Unavailable as exc:
                log.warning("outbox publisher: workspace %d: %s; retrying", workspace_id, exc)
            except Exception as exc:  # a bad row: logged each sweep, the others go on
                self._count(errors=1)
                log.error(
                    "outbox publisher: workspace %d not published: %s: %s",
                    workspace_id, type(exc).__name__, exc,
                )  # fmt: skip
        return found

    # -- the owner's side -----------------------------------------------------------------
    def notify(self, chat_id: int, committed: float = 0.0) -> bool:
        """The chat committed outbox rows: publish them soon. Never blocks. ``committed``:
        the commit's wall-clock time (0.0: now), carried to every node to time the fan-out.

        Coalescing: a chat already queued stays queued once; a chat being published gets
        one more pass after the current one, however many notifies arrive meanwhile.
        Full case: with ``pending_max`` chats queued, a new chat is not queued (False,
        counted in ``dropped``, logged): its rows stay in the outbox and the sweeper
        queues the chat once they are ``sweep_age`` old — late, never lost.
        """
        if chat_id in self._active:
            self._again.add(chat_id)
            self._issue(chat_id, committed)
            return True
        if self._quarantined(chat_id):
            return True  # deferred: the sweeper queues it once its quarantine is over
        if chat_id in self._queued:
            self._issue(chat_id, committed)
            return True
        if len(self._queued) >= self._pending_max:
            self._count(dropped=1)
            log.warning(
                "outbox publisher: %d chats pending; chat %d left to the sweeper",
                len(self._queued),
                chat_id,
            )
            return False
        self._queued.add(chat_id)
        self._send.send_nowait(chat_id)  # cannot block: one channel item per queued chat
        self._issue(chat_id, committed)
        self._count()
        return True

    def _issue(self, chat_id: int, committed: float = 0.0) -> None:
        self._committed.setdefault(chat_id, committed or time.time())
        progress = self._progress.get(chat_id)
        if progress is None:
            progress = self._progress[chat_id] = _Progress()
        progress.issued += 1

    async def wait_notified(self, chat_id: int) -> None:
        """Return once every ``notify(chat_id)`` made before this call is covered: a pass
        that started after it published the chat's rows (they are stored in JetStream), or
        the chat's drain ended (published, or quarantined: then at once). Returns at once
        for a chat with nothing queued. How the owner answers a write only after its events
        are stored, as one process answers after publishing (docs/cluster.md "Built: the
        suites on a cluster"). Bound it with ``trio.move_on_after``: a chat that NATS
        cannot take stays queued."""
        progress = self._progress.get(chat_id)
        if progress is None:
            return
        ticket = progress.issued
        while not progress.over and progress.covered < ticket:
            await progress.changed.wait()

    # -- running ----------------------------------------------------------------------------
    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Ensure the stream (retried with backoff while NATS is unavailable; ``ready`` is
        set after it), then run the workers and the sweeper until cancelled. Reports
        started at once: notifies before the stream exists wait in the pending set."""
        task_status.started()
        await self._retry(self._ensure_stream)
        self.ready.set()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._worker)
            for _ in range(self.workers - 1):
                nursery.start_soon(self._alone_worker)
            nursery.start_soon(self._sweeper)

    async def publish_chat(self, chat_id: int) -> int:
        """Publish the chat's rows until none are left; the number published. Raises
        ``Unavailable`` (NATS or PostgreSQL; rows not yet deleted stay and are retried) or
        ``_Busy`` (another publisher holds the chat). Callers keep one call per chat. A batch
        that timed out halves the chat's batch size (down to 1); one that commits doubles it
        (up to ``batch``)."""
        total = 0
        while True:
            size = self._sizes.get(chat_id, self._batch)
            try:
                n = await self._publish_batch(chat_id, size)
            except OperationTimedOut:
                self._resize(chat_id, max(1, size // 2))
                raise
            self._resize(chat_id, min(self._batch, size * 2))
            total += n
            if n < size:
                return total

    def batch_size(self, chat_id: int) -> int:
        """The rows the chat's next batch may take (``batch`` unless batches timed out)."""
        return self._sizes.get(chat_id, self._batch)

    async def sweep_once(self) -> list[int]:
        """Queue the chats whose rows are older than ``sweep_age`` (up to ``sweep_limit``,
        oldest first); the chats found. Skipped (``[]``) while NATS is not connected;
        PostgreSQL unavailable: logged, ``[]``."""
        if self._bus.state is not BusState.CONNECTED:
            return []
        try:
            skip = [c for c in self._quarantine if self._quarantined(c)]
            chats = await self._storage._read_op(
                outbox.stale_chats(self._sweep_age, self._sweep_limit, skip)
            )
        except Unavailable as exc:
            log.warning("outbox sweep failed: %s", exc)
            return []
        for chat_id in chats:
            self.notify(chat_id)
        self._count(sweeps=1)
        return chats

    def statistics(self) -> PublisherStatistics:
        """A snapshot of the counters (see ``PublisherStatistics``)."""
        return PublisherStatistics(
            **self._counts,
            pending=len(self._queued),
            active=len(self._active),
            quarantined=sum(1 for c in self._quarantine if self._quarantined(c)),
        )

    async def wait_for(self, predicate: Callable[[PublisherStatistics], bool]) -> None:
        """Return once ``predicate(self.statistics())`` holds (re-checked on every change;
        bound it with ``trio.fail_after``)."""
        while not predicate(self.statistics()):
            await self.wait_change()

    async def wait_change(self) -> None:
        """Return at the next change of the counters or of the pending/active sets."""
        await self._changed.wait()

    async def wait_idle(self) -> None:
        """Return once no chat is queued or being published (a drain: call after the last
        notify; bound it with ``trio.fail_after``)."""
        await self.wait_for(lambda s: s.pending == 0 and s.active == 0)

    # -- internals --------------------------------------------------------------------------
    def _count(self, **deltas: int) -> None:
        counts = self._counts
        for key, delta in deltas.items():
            counts[key] += delta
        self._changed.set()
        self._changed = trio.Event()

    def _resize(self, chat_id: int, size: int) -> None:
        if size >= self._batch:
            self._sizes.pop(chat_id, None)
        elif chat_id in self._sizes or len(self._sizes) < self._pending_max:
            self._sizes[chat_id] = size

    def _quarantined(self, chat_id: int) -> bool:
        entry = self._quarantine.get(chat_id)
        return entry is not None and trio.current_time() < entry[0]

    def _quarantine_chat(self, chat_id: int, exc: Exception) -> None:
        """Leave ``chat_id`` alone for a growing delay; log the first failure of a streak."""
        entry = self._quarantine.get(chat_id)
        if entry is None:
            log.error(
                "outbox publisher: chat %d quarantined after %s: %s (retried in %.1fs,"
                " backing off up to %.0fs; other chats go on)",
                chat_id, type(exc).__name__, exc, self._quarantine_first, QUARANTINE_MAX,
            )  # fmt: skip
            delay = self._quarantine_first
        else:
            delay = min(entry[1] * 2, QUARANTINE_MAX)
        if entry is not None or len(self._quarantine) < self._pending_max:
            self._quarantine[chat_id] = (trio.current_time() + delay, delay)
        self._count(errors=1)

    async def _ensure_stream(self) -> None:
        spec = wire.StreamSpec(self.stream, self.prefix, max_bytes=self._max_bytes)
        await wire.ensure_stream(self._bus, spec)
        self._stream_ok = True

    async def _retry(self, attempt: Callable[[], Awaitable[T]]) -> T:
        delay = BACKOFF_FIRST
        while True:
            try:
                return await attempt()
            except Unavailable as exc:
                self._count(failures=1)
                log.warning("outbox publisher: %s; retrying in %.1fs", exc, delay)
            await trio.sleep(delay)
            delay = min(delay * 2, BACKOFF_MAX)

    async def _worker(self) -> None:
        async for chat_id in self._receive:
            left: set[int] = set()
            try:
                await self._drain_group(self._take([chat_id], left), left)
            finally:
                for chat in left:
                    self._finish(chat)
                self._count()

    def _take(self, group: list[int], left: set[int]) -> list[int]:
        """``group`` plus every chat queued by now, up to ``GROUP`` in all: active now."""
        while len(group) < self._group:
            try:
                group.append(self._receive.receive_nowait())
            except trio.WouldBlock:
                break
        for chat in group:
            if chat not in left:
                self._queued.discard(chat)
                self._active.add(chat)
                left.add(chat)
        self._count()
        return group

    async def _alone_worker(self) -> None:
        """Drains, one by one, the chats the group worker handed over (``_drain``)."""
        async for chat_id, failed in self._alone_receive:
            try:
                await self._drain(chat_id, failed=failed)
            finally:
                self._finish(chat_id)
                self._count()

    def _finish(self, chat_id: int) -> None:
        """``chat_id``'s drain ended: it leaves the worker (a notify queues it again)."""
        self._active.discard(chat_id)
        self._again.discard(chat_id)
        self._committed.pop(chat_id, None)
        ended = self._progress.pop(chat_id, None)
        if ended is not None:
            ended.end()

    async def _drain_group(self, group: list[int], left: set[int]) -> None:
        """Publish the chats of ``group`` together (``_publish_group``) until each is empty
        and had no notify meanwhile, taking the chats queued meanwhile into each next pass;
        a chat leaves ``left`` (``_finish``) as soon as it is done. Chats a pass could not
        publish — busy, a failed publish, or the whole pass failed (unavailable, timed out,
        a bad row) — go at once to the one-chat workers (``_drain``: backoff, batch halving,
        quarantine), so they never hold the others back; with no such worker (``workers``
        1) or their channel full, this worker drains them itself, right after the pass."""
        todo = list(group)
        while todo:
            for chat in todo:
                self._again.discard(chat)
            starts = {}
            for chat in todo:
                progress = self._progress.get(chat)
                starts[chat] = progress.issued if progress is not None else 0
            alone: list[int] = []
            again: list[int] = []
            unavailable = False
            try:
                outcome = await self._publish_group(todo)
            except Exception as exc:  # each chat on its own: see the docstring
                if isinstance(exc, Unavailable):
                    self._stream_ok = False  # re-ensured before the next publish, as _drain
                    self._count(failures=1)
                    unavailable = True
                outcome = {}
            for chat in todo:
                result = outcome.get(chat)
                if result is None:  # busy, or its publishes failed
                    alone.append(chat)
                    continue
                progress = self._progress.get(chat)
                if progress is not None:
                    progress.cover(starts[chat])
                if self._quarantine.pop(chat, None) is not None:
                    log.info("outbox publisher: chat %d published again", chat)
                if result or chat in self._again:  # a full batch, or notified meanwhile
                    again.append(chat)
                else:
                    left.discard(chat)
                    self._finish(chat)
            self._count()
            await self._hand_over(alone, left, unavailable)
            todo = self._take(again, left) if again else []

    async def _hand_over(self, alone: list[int], left: set[int], unavailable: bool) -> None:
        """``alone`` to the one-chat workers, or drained here (see ``_drain_group``)."""
        for chat in alone:
            left.discard(chat)
            if self.workers > 1:
                try:
                    self._alone_send.send_nowait((chat, unavailable))
                    continue
                except trio.WouldBlock:
                    pass
            try:
                await self._drain(chat, failed=unavailable)
            except BaseException:
                left.add(chat)  # the worker's finally ends it
                raise
            unavailable = False  # the backoff is the group's, waited once
            self._finish(chat)
            self._count()

    async def _publish_group(self, chats: list[int]) -> dict[int, bool]:
        """One transaction for ``chats``: lock and read each chat's next batch
        (``outbox.claim_many``), publish every chat's rows (``Bus.js_publish_chains``: a
        chat's rows in order, each after the previous one's ack; the chats concurrently),
        delete the rows of the chats whose every publish was acknowledged, commit. Returns
        ``{chat: more}`` for those chats (``more``: its batch was full, rows may be left);
        a chat missing from it was busy or failed to publish (its rows stay). Raises
        ``Unavailable`` / ``OperationTimedOut`` (nothing deleted) and whatever a bad row
        raises (the transaction rolls back)."""
        if self._bus.state is not BusState.CONNECTED:
            raise Unavailable(f"NATS is {self._bus.state.value}")
        if not self._stream_ok:
            await self._ensure_stream()
        sizes = {chat: self.batch_size(chat) for chat in chats}
        limits = list(sizes.items())
        committed = {chat: self._committed.pop(chat, 0.0) for chat in chats}

        async def run(conn: Connection) -> tuple[dict[int, bool], int]:
            await conn.execute("BEGIN")
            claimed = await run_op(conn, outbox.claim_many(limits))
            order = [chat for chat in chats if claimed.get(chat)]
            chains = [self._chain(claimed[chat], committed[chat]) for chat in order]
            results = await self._bus.js_publish_chains(chains) if chains else []
            done: dict[int, bool] = {c: False for c, rows in claimed.items() if not rows}
            gone: list[tuple[int, int]] = []
            stored = duplicates = notices = 0
            failed: Unavailable | None = None
            for chat, chain, (acks, error) in zip(order, chains, results, strict=True):
                for item, ack in zip(chain, acks, strict=False):
                    if item.msg_id.startswith("n:"):
                        notices += 1
                    elif ack.duplicate:
                        duplicates += 1
                    else:
                        stored += 1
                if error is not None:
                    failed = failed or error
                    continue
                rows = claimed[chat]
                done[chat] = len(rows) >= sizes[chat]
                gone += [(chat, e.event_seq) for e in rows]
            self._count(stored=stored, duplicates=duplicates, notices=notices)
            if failed is not None and not gone:
                raise failed  # nothing to keep: roll back, every chat retries alone
            removed = await run_op(conn, outbox.remove_many(gone))
            await conn.execute("COMMIT")
            return done, removed

        done, removed = await self._storage._call(run)
        for chat in done:  # committed: a halved batch size doubles again, as in publish_chat
            if chat in self._sizes:
                self._resize(chat, min(self._batch, sizes[chat] * 2))
        if removed:
            self._count(removed=removed)
        return done

    def _chain(self, batch: list[PendingEvent], committed: float) -> list[JsPublish]:
        """A chat's batch as publishes, in order: per event its notices, then the event."""
        out = []
        for event in batch:
            chat, seq = event.chat_id, event.event_seq
            headers = {"Fx-Event": event.name, "Fx-Seq": str(seq)}
            if committed:
                headers[wire.H_COMMITTED] = f"{committed:.6f}"
            for uid, kind in _notices(event):
                notice = events.dumps({kind: "c", "id": chat, "event_seq": seq})
                out.append(
                    JsPublish(self.user_subject(uid), notice, f"n:c:{chat}:{seq}:{uid}", headers)
                )
            out.append(
                JsPublish(self.chat_subject(chat), event.payload, f"c:{chat}:{seq}", headers)
            )
        return out

    async def _drain(self, chat_id: int, *, failed: bool = False) -> None:
        """Publish ``chat_id`` until it is empty and no notify came meanwhile; a failure is
        retried after a backoff of 0.1 s doubling to 2 s (the rows stay in the outbox). Any
        other error quarantines the chat (``_quarantine_chat``) and returns: the worker lives
        on. ``trio.Cancelled`` is not an ``Exception`` and propagates. ``failed``: the
        group pass just failed as unavailable, so the first attempt waits the backoff."""
        delay = BACKOFF_FIRST
        if failed:
            await trio.sleep(delay)
            delay *= 2
        while True:
            self._again.discard(chat_id)
            progress = self._progress.get(chat_id)
            start = progress.issued if progress is not None else 0
            try:
                await self.publish_chat(chat_id)
            except _Busy:
                self._count(busy=1)
            except Unavailable as exc:
                self._stream_ok = False  # re-ensured before the next publish (stream lost?)
                self._count(failures=1)
                if delay == BACKOFF_FIRST:  # the first failure of a streak
                    log.warning("outbox publisher: chat %d: %s; retrying", chat_id, exc)
            except Exception as exc:  # bounded quarantine, see the module doc
                self._quarantine_chat(chat_id, exc)
                return
            else:
                if progress is not None:
                    progress.cover(start)
                    self._count()
                if self._quarantine.pop(chat_id, None) is not None:
                    log.info("outbox publisher: chat %d published again", chat_id)
                if chat_id not in self._again:
                    return
                delay = BACKOFF_FIRST
                continue
            await trio.sleep(delay)
            delay = min(delay * 2, BACKOFF_MAX)

    async def _publish_batch(self, chat_id: int, size: int) -> int:
        if self._bus.state is not BusState.CONNECTED:
            raise Unavailable(f"NATS is {self._bus.state.value}")
        if not self._stream_ok:
            await self._ensure_stream()
        # The oldest commit this batch may take (an upper bound of the others' age).
        committed = self._committed.pop(chat_id, 0.0)

        async def run(conn: Connection) -> tuple[int, int]:
            await conn.execute("BEGIN")
            batch = await run_op(conn, outbox.claim(chat_id, size))
            if batch is None:
                raise _Busy  # the pool rolls the transaction back
            for event in batch:
                await self._publish_event(event, committed)
            removed = 0
            if batch:
                removed = await run_op(conn, outbox.remove(chat_id, [e.event_seq for e in batch]))
            await conn.execute("COMMIT")
            return len(batch), removed

        read, removed = await self._storage._call(run)
        if removed:
            self._count(removed=removed)
        return read

    async def _publish_event(self, event: PendingEvent, committed: float = 0.0) -> None:
        chat, seq = event.chat_id, event.event_seq
        headers = {"Fx-Event": event.name, "Fx-Seq": str(seq)}
        if committed:
            headers[wire.H_COMMITTED] = f"{committed:.6f}"
        for uid, kind in _notices(event):
            notice = events.dumps({kind: "c", "id": chat, "event_seq": seq})
            await self._bus.js_publish(
                self.user_subject(uid), notice, f"n:c:{chat}:{seq}:{uid}", headers
            )
            self._count(notices=1)
        ack = await self._bus.js_publish(
            self.chat_subject(chat), event.payload, f"c:{chat}:{seq}", headers
        )
        if ack.duplicate:
            self._count(duplicates=1)
        else:
            self._count(stored=1)

    async def _sweeper(self) -> None:
        while True:
            await trio.sleep(self._sweep_every)
            await self.sweep_once()
            await self.sweep_workspaces()


def _notices(event: PendingEvent) -> list[tuple[int, str]]:
    """The membership notices to store before ``event``: ``(user, "joined")`` for each user
    in ``notify`` of a join, ``(user, "left")`` for a departure — the removed user of a
    ``chat.member_removed`` (from its payload) and each member in ``notify`` of a
    ``chat.deleted``. A resume on another node reads the user's notices first to know the
    chats they left while away (docs/cluster.md "Built: C3")."""
    if event.name == events.MEMBER_REMOVED:
        try:
            removed = json.loads(event.payload).get("user_id")
        except (ValueError, AttributeError):
            removed = None
        return [(removed, "left")] if isinstance(removed, int) else []
    kind = "left" if event.name == events.CHAT_DELETED else "joined"
    return [(uid, kind) for uid in event.notify]
