"""The node's ``Sequencer``: stored events reach each user in stream-sequence order, so an
event id ``<E>-<S>`` always means "every event for this user with a stream sequence ≤ S
was sent" (docs/cluster.md §10, "Built: exact resume across chats").

Why it is needed: the stream assigns ``S`` in store order and republishes in that order on
the node's one NATS connection, but the order across subscriptions is lost on the way in
(nats-py's per-subscription tasks, then one router task per chat), and a chat that catches
up (a gap, a join) delivers events older than other chats' live ones. The router therefore
hands its deliveries here (``push``) instead of to the hub, and a release pass hands them on
in ``S`` order once no older event can still come:

- **the live watermark** ``W``: the newest ``S`` the live feed has shown (``seen``, called
  for every republished message the router or a notice reader takes). Socket order is
  stream order, so every older live message is on the connection before it: a pass first
  runs ``Bus.barrier`` (the bus has handed everything parsed to the Subscriptions), then
  waits until the watched subscriptions' consumers have taken what was offered by then
  (``watch``/``progress``). After that every live message with ``S ≤ W`` has been processed
  (delivered here, held by its chat's catch-up, or seen as a ``Gap``);
- **the users' bounds** (``bounds``, the router's ``EventRouter.bounds``): a chat that is
  catching up, or not positioned yet, will still deliver events from some ``S`` on; its
  local members' events from there on wait (per user, in ``S`` order) until it is done;
- a pass releases every pending event with ``S ≤ W`` below its recipients' bounds, oldest
  first, one ``deliver`` per event (all its released recipients: encoded once).

Events read from the log above ``W`` (a catch-up of a quiet chat) wait for the live feed
to pass them; when nothing live comes, a **tick** (an empty message stored on
``<prefix>.ev.tick.<origin>``, republished to this node only) moves ``W`` past them.

Bounds and full cases: at most ``hold`` events wait per user behind a bound; one more →
that user's streams get ``resync`` (``history_unavailable``) and their waiting events are
dropped (the client refetches). At most ``pending`` events wait node-wide for the
watermark; one more → every user with a waiting event gets ``resync`` and the queue is
emptied. Events without a stream sequence (typing, presence) pass straight through.
"""

from __future__ import annotations

import heapq
import logging
from collections.abc import Callable, Iterable, Mapping
from contextlib import suppress
from dataclasses import dataclass
from math import inf

import trio

from fechatter.bus.base import Bus, Message, Subscription
from fechatter.cluster.events import H_STREAM_SEQ, RETRY_FIRST, RETRY_MAX, Deliver
from fechatter.errors import Unavailable
from fechatter.events import Event

log = logging.getLogger(__name__)

HOLD = 10_000  # events waiting per user behind a catch-up (full → resync that user)
PENDING = 100_000  # events waiting node-wide for the live watermark (full → resync them)
TICK_BUFFER = 16  # ticks buffered on the node's tick subscription (full → Gap, harmless)

Bounds = Callable[[int], Mapping[int, float]]
"""``bounds(pass_no)``: user → the lowest stream sequence a chat of theirs may still
deliver (events from it on wait); users not listed are unbounded."""
ResyncUsers = Callable[[list[int], str], None]
"""``resync(user_ids, reason)``: those users' streams must get ``resync``."""


@dataclass
class SequencerStatistics:
    passes: int = 0  # release passes run
    released: int = 0  # events handed on (one per event, not per user)
    held_max: int = 0  # most events waiting for one user behind a bound
    ticks: int = 0  # ticks published (a quiet live feed)
    resyncs: int = 0  # users resynced on a full hold or a full queue


def _no_bounds(pass_no: int) -> Mapping[int, float]:
    return {}


class Sequencer:
    """Release stored events to users in stream-sequence order (see the module)."""

    def __init__(
        self,
        bus: Bus,
        deliver: Deliver,
        resync: ResyncUsers,
        *,
        prefix: str,
        origin: str,
        hold: int = HOLD,
        pending: int = PENDING,
    ) -> None:
        self._bus = bus
        self._deliver = deliver
        self._resync = resync
        self._tick_subject = f"{prefix}.ev.tick.{origin}"
        self._tick_live = f"{prefix}.rt.tick.{origin}"
        self._hold = hold
        self._pending_max = pending
        self.bounds: Bounds = _no_bounds  # set by the wiring: the router's
        self._heap: list[tuple[int, int, list[int], Event]] = []
        self._held: dict[int, list[tuple[int, int, Event]]] = {}  # user → behind a bound
        self._n = 0
        self._ticks = 0
        self._tick_seq = 0  # stream sequence of the newest tick stored
        self.live_high = 0  # W's candidate: the newest S the live feed showed
        self.passes = 0  # release passes started (``watch`` records it)
        self._fresh: dict[int, int] = {}  # user → the pass their notices were watched at
        self._watched: set[Subscription] = set()
        # Watched subscriptions that may have items not yet taken (``on_offer`` adds them,
        # a pass drops the settled ones): what ``_settle`` scans instead of every watched one.
        self._backlog: set[Subscription] = set()
        self._wake = trio.Event()
        self._progress = trio.Event()
        self._waiting = False
        self.stats = SequencerStatistics()

    # -- inputs (synchronous, on trio) ---------------------------------------------------------
    def push(self, user_ids: Iterable[int], event: Event) -> None:
        """The router's ``deliver``: queue a stored event (``stream_seq`` > 0) for release;
        one without passes straight to the hub (ephemeral). Never blocks."""
        stream_seq = getattr(event, "stream_seq", 0)
        if not isinstance(stream_seq, int) or stream_seq <= 0:
            self._deliver(list(user_ids), event)
            return
        users = list(user_ids)
        if not users:
            return
        if len(self._heap) >= self._pending_max:
            self._overflow()
        self._n += 1
        heapq.heappush(self._heap, (stream_seq, self._n, users, event))
        self._wake.set()

    def seen(self, stream_seq: int) -> None:
        """A live (republished) message with this stream sequence was taken by its reader."""
        if stream_seq > self.live_high:
            self.live_high = stream_seq
            if self._heap or self._held:
                self._wake.set()

    def watch(self, subscription: Subscription, user_id: int | None = None) -> None:
        """Release passes wait for ``subscription``'s consumer (it calls ``progress`` after
        each item and ``seen`` for each republished message). ``user_id``: the user whose
        notices it carries; their events wait until a pass has covered it."""
        self._watch(subscription)
        if user_id is not None:
            self._fresh[user_id] = self.passes

    def _watch(self, subscription: Subscription) -> None:
        self._watched.add(subscription)
        subscription.on_offer = self._backlog.add
        if subscription.offered > subscription.taken:
            self._backlog.add(subscription)

    def unwatch(self, subscription: Subscription) -> None:
        self._watched.discard(subscription)
        self._backlog.discard(subscription)
        subscription.on_offer = None
        self._poke()

    def progress(self) -> None:
        """A watched consumer took an item (cheap when no pass waits)."""
        if self._waiting:
            self._progress.set()

    def settled(self) -> None:
        """A bound may have moved (a chat finished catching up or got positioned)."""
        if self._held or self._heap:
            self._wake.set()

    def _poke(self) -> None:
        if self._waiting:
            self._progress.set()

    # -- the release task ---------------------------------------------------------------------
    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Subscribe the node's tick subject, then run release passes until cancelled."""
        sub = await self._subscribe_ticks()
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._read_ticks, sub)
                task_status.started()
                await self._release_forever()
        finally:
            self.unwatch(sub)
            with trio.CancelScope(shield=True), trio.move_on_after(2.0), suppress(Unavailable):
                await self._bus.unsubscribe(sub)

    async def _subscribe_ticks(self) -> Subscription:
        delay = RETRY_FIRST
        while True:
            try:
                sub = await self._bus.subscribe(self._tick_live, buffer=TICK_BUFFER)
            except Unavailable as exc:
                log.warning("tick subscription failed (%s); retrying", exc)
                await trio.sleep(delay)
                delay = min(RETRY_MAX, delay * 2)
                continue
            self._watch(sub)
            return sub

    async def _read_ticks(self, sub: Subscription) -> None:
        async for item in sub:
            if isinstance(item, Message):
                headers = item.headers or {}
                with suppress(ValueError):
                    self.seen(int(headers.get(H_STREAM_SEQ, "0")))
            else:  # a stored tick's copy may be lost (a lost connection): store another
                self._tick_seq = 0
                self._wake.set()
            self.progress()

    async def _release_forever(self) -> None:
        while True:
            await self._wake.wait()
            self._wake = trio.Event()
            if not self._heap and not self._held:
                continue
            target = self.live_high
            if self._heap and self._heap[0][0] > target and not self._held:
                await self._tick()  # nothing releasable until the live feed passes
                continue
            await self._settle()
            self.passes += 1
            self.stats.passes += 1
            self._release(target)
            await self._tick()

    def _needs_tick(self) -> bool:
        """Events wait above the live watermark and no stored tick will pass them."""
        heap = self._heap
        return bool(heap) and heap[0][0] > self.live_high and self._tick_seq < heap[0][0]

    async def _tick(self) -> None:
        """Store an empty message on this node's tick subject: its republished copy moves
        the live watermark past everything stored before it. Retried while unavailable."""
        delay = RETRY_FIRST
        while self._needs_tick():
            self._ticks += 1
            try:
                ack = await self._bus.js_publish(
                    self._tick_subject, b"", f"{self._tick_subject}:{self._ticks}"
                )
                self._tick_seq = max(self._tick_seq, ack.seq)
                self.stats.ticks += 1
                return
            except Unavailable as exc:
                log.warning("tick not stored (%s); retrying", exc)
                await trio.sleep(delay)
                delay = min(RETRY_MAX, delay * 2)

    async def _settle(self) -> None:
        """Everything the connection received so far has been taken by its consumer."""
        delay = RETRY_FIRST
        while True:
            try:
                await self._bus.barrier()
                break
            except Unavailable as exc:
                log.warning("bus barrier failed (%s); retrying", exc)
                await trio.sleep(delay)
                delay = min(RETRY_MAX, delay * 2)
        # Only the subscriptions with items not yet taken (a few of the node's thousands:
        # one per chat and one per user), from the backlog set; the settled ones leave it.
        watched, backlog = self._watched, self._backlog
        targets = []
        for sub in list(backlog):
            offered = sub.offered
            if offered > sub.taken and not sub.closed and sub in watched:
                targets.append((sub, offered))
            else:
                backlog.discard(sub)  # an offer after this adds it again
        self._waiting = True
        try:
            while True:
                self._progress = trio.Event()
                targets = [
                    (s, t) for s, t in targets if s.taken < t and not s.closed and s in watched
                ]
                if not targets:
                    return
                await self._progress.wait()
        finally:
            self._waiting = False

    def _release(self, through: int) -> None:
        """Hand on every waiting event with ``S ≤ through`` below its users' bounds."""
        pass_no = self.passes
        bounds = self.bounds(pass_no)
        fresh = self._fresh
        for user_id, at in list(fresh.items()):
            if at < pass_no:
                del fresh[user_id]
        held = self._held
        heap = self._heap
        while heap and heap[0][0] <= through:
            stream_seq, n, users, event = heapq.heappop(heap)
            now = []
            for user_id in users:
                # A user with events waiting gets this one behind them (S order per user).
                if user_id in held or stream_seq >= self._bound(user_id, bounds):
                    self._hold_for(user_id, stream_seq, n, event)
                else:
                    now.append(user_id)
            if now:
                self._deliver(now, event)
                self.stats.released += 1
        for user_id in list(held):
            self._release_held(user_id, through, self._bound(user_id, bounds))

    def _bound(self, user_id: int, bounds: Mapping[int, float]) -> float:
        if user_id in self._fresh:
            return 0
        return bounds.get(user_id, inf)

    def _release_held(self, user_id: int, through: int, bound: float) -> None:
        queue = self._held[user_id]
        while queue and queue[0][0] <= through and queue[0][0] < bound:
            _, _, event = heapq.heappop(queue)
            self._deliver([user_id], event)
            self.stats.released += 1
        if not queue:
            del self._held[user_id]

    def _hold_for(self, user_id: int, stream_seq: int, n: int, event: Event) -> None:
        queue = self._held.setdefault(user_id, [])
        if len(queue) >= self._hold:
            log.warning("user %d: %d events held behind a catch-up; resync", user_id, len(queue))
            del self._held[user_id]
            self.stats.resyncs += 1
            self._resync([user_id], "history_unavailable")
            return
        heapq.heappush(queue, (stream_seq, n, event))
        self.stats.held_max = max(self.stats.held_max, len(queue))

    def _overflow(self) -> None:
        """The node-wide queue is full (the live watermark is stuck): resync its users."""
        users = {u for _, _, us, _ in self._heap for u in us} | set(self._held)
        waiting = len(self._heap)
        log.warning("%d events waiting for the live feed; resync %d users", waiting, len(users))
        self._heap.clear()
        self._held.clear()
        self.stats.resyncs += len(users)
        self._resync(sorted(users), "history_unavailable")
