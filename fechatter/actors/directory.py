"""Directory: finds or starts the ChatActor of a chat, supervises it, reaps it when idle.

Other code never touches an actor's channel: it calls ``Directory.call(chat_id, command)``.
The directory starts the actor on demand in the nursery it owns, restarts it from storage
when it raises (one-for-one, under ``supervisor.RestartPolicy``: at most ``restart_budget``
times per ``restart_window`` seconds, then the chat's actor is stopped and the next call
starts it afresh), and retires it after ``idle_seconds`` without commands. Every call is
answered: by the actor, or with ``Unavailable`` (crash, timeout) / ``NotFound`` (chat
deleted) by the directory when the actor cannot answer it any more.

In a cluster (docs/cluster.md §2, §3) the ``ChatRouter`` sets ``activate``: each activation
first takes the chat's lease and gets the fenced ``ChatStore`` the actor writes through (so
the state is loaded after the acquire committed). An activation refused (another node holds
the chat) or a fenced write refused (``ChatMoved``) stops the actor **without restart** and
fails its calls with ``ChatMoved``; the router re-resolves the owner and retries them.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import trio

from fechatter import logs
from fechatter.actors.chat import ChatActor, ChatRetired, ChatWrites
from fechatter.actors.commands import Command
from fechatter.actors.mailbox import Call, fail_queued
from fechatter.actors.supervisor import RestartPolicy
from fechatter.errors import ChatMoved, FechatterError, NotFound, Unavailable
from fechatter.events import EventSink
from fechatter.storage import Storage

log = logging.getLogger(__name__)

R = TypeVar("R")

# chat id -> the writes of that chat's actor (cluster: its fenced ChatStore). Raises
# ``ChatMoved`` when another node holds the chat, ``NotFound`` when there is no such chat.
Activate = Callable[[int], Awaitable[ChatWrites]]


class ChatCaller(Protocol):
    """What the domain needs to run a chat command: the ``Directory`` (one process) or the
    cluster's ``ChatRouter`` (docs/cluster.md §3), same signature and errors."""

    async def call(self, chat_id: int, command: Command[R]) -> R:
        """Run ``command`` at the chat's one writer and return its reply; raises its error,
        or ``Unavailable`` (``chat_unavailable``) when no writer answered in time."""
        ...


@dataclass(frozen=True, slots=True)
class DirectoryConfig:
    mailbox_size: int = 256
    group_commit_max: int = 256
    idle_seconds: float = 300.0
    restart_budget: int = 5
    restart_window: float = 60.0
    call_timeout: float = 10.0
    typing_ttl: float = 10.0
    max_reactions: int = 50  # distinct emoji per message (SPEC §6)
    # Cluster only: seconds a fenced actor trusts its lease for a typing command (which never
    # writes) since the last fenced write or lease read; older: one lease read first.
    lease_recheck: float = 2.0


@dataclass(frozen=True, slots=True)
class DirectoryStatistics:
    chat_actors: int
    mailbox_depth: int
    restarts: int


class _Slot:
    """One chat's mailbox and the state of its actor task."""

    __slots__ = ("actor", "chat_id", "error", "idle", "ready", "receive", "retired", "send")

    def __init__(self, chat_id: int, size: int) -> None:
        self.chat_id = chat_id
        self.send, self.receive = trio.open_memory_channel[Call[Any]](size)
        self.ready = trio.Event()
        self.error: FechatterError | None = None
        self.actor: ChatActor | None = None
        # Set by ``Directory.retire_all``: the actor stops before its next batch with it.
        self.retired: ChatMoved | None = None
        self.idle: trio.CancelScope | None = None  # the mailbox wait, while waiting


class Directory:
    """Maps chat ids to running ChatActors; owns their tasks (in ``nursery``)."""

    def __init__(
        self,
        storage: Storage,
        sink: EventSink,
        nursery: trio.Nursery,
        config: DirectoryConfig | None = None,
    ) -> None:
        self._storage = storage
        # Where actors publish: the UserHub; in a cluster the event wiring replaces it for
        # its lifetime (events go through the outbox; docs/cluster.md §8 "event wiring").
        self.sink = sink
        self._nursery = nursery
        self.config = config or DirectoryConfig()
        self._slots: dict[int, _Slot] = {}
        self._restarts = 0
        self._emptied = trio.Event()  # set (and replaced) when the last actor stops
        # Cluster mode only (set by the ChatRouter for its lifetime); None: writes go to
        # ``storage`` unfenced, as in one process.
        self.activate: Activate | None = None

    def statistics(self) -> DirectoryStatistics:
        depth = sum(s.receive.statistics().current_buffer_used for s in self._slots.values())
        return DirectoryStatistics(len(self._slots), depth, self._restarts)

    def is_running(self, chat_id: int) -> bool:
        return chat_id in self._slots

    def retire_all(self, why: str) -> None:
        """Stop every running actor before its next batch, without restart (cluster: this
        node fenced itself, so its leases may move). A batch in progress finishes (its
        writes still meet the fence); queued and later calls fail with ``ChatMoved(why)``,
        which the router re-routes. Actors activating now are refused by their activation."""
        for slot in self._slots.values():
            if slot.retired is None:
                slot.retired = ChatMoved(why)
            if slot.idle is not None:
                slot.idle.cancel()

    async def wait_empty(self) -> None:
        """Return once no actor runs (cluster graceful leave, after ``retire_all``: every
        batch in progress has committed and been answered). Bound it with
        ``trio.move_on_after``."""
        while self._slots:
            await self._emptied.wait()

    async def call(self, chat_id: int, command: Command[R]) -> R:
        """Send a command to the chat's actor and wait for its answer (the command's ``R``).

        Bounded by ``call_timeout`` (then ``Unavailable``); a full mailbox makes the caller
        wait, which is the backpressure a busy chat applies to its senders.
        """
        with trio.move_on_after(self.config.call_timeout):
            # A mailbox closes when its actor retires; the retry then starts a fresh actor.
            for _ in range(3):
                slot = self._slots.get(chat_id) or self._spawn(chat_id)
                await slot.ready.wait()
                if slot.error is not None:
                    raise slot.error
                call: Call[R] = Call(command)
                try:
                    await slot.send.send(call)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    continue
                return await call.wait()
        raise Unavailable("the chat did not answer in time", code="chat_unavailable")

    def _spawn(self, chat_id: int) -> _Slot:
        slot = _Slot(chat_id, self.config.mailbox_size)
        self._slots[chat_id] = slot
        self._nursery.start_soon(self._supervise, slot, name=f"ChatActor#{chat_id}")
        return slot

    async def _supervise(self, slot: _Slot) -> None:
        """Run one chat's actor; restart it on failure within the budget."""
        logs.enter_task(chat_id=slot.chat_id)  # not the context of the call that woke it
        policy = RestartPolicy(self.config.restart_budget, self.config.restart_window)
        final: FechatterError = Unavailable("chat actor stopped; retry", code="chat_unavailable")
        try:
            while True:
                try:
                    writes: ChatWrites = self._storage
                    if self.activate is not None:
                        writes = await self.activate(slot.chat_id)
                    state = await self._storage.load_chat_state(slot.chat_id)
                    if state is None:
                        final = NotFound("chat not found", code="chat_not_found")
                        return
                    actor = ChatActor(
                        state,
                        self._storage,
                        self.sink,
                        group_commit_max=self.config.group_commit_max,
                        typing_ttl=self.config.typing_ttl,
                        max_reactions=self.config.max_reactions,
                        writes=writes,
                        lease_recheck=self.config.lease_recheck,
                    )
                    slot.actor = actor
                    slot.ready.set()
                    await self._serve(slot, actor)
                    return
                except ChatMoved as exc:
                    # Another node holds the chat: never restart here (the router retries
                    # the calls at the owner); nothing of theirs was written.
                    final = exc
                    _fail_inflight(slot, exc)
                    return
                except ChatRetired:
                    final = NotFound("chat not found", code="chat_not_found")
                    _fail_inflight(slot, final)
                    return
                except FechatterError as exc:
                    # Storage unavailable while loading: the callers waiting get that error.
                    final = exc
                    if not slot.ready.is_set():
                        return
                    _fail_inflight(slot, exc)
                except Exception:
                    log.exception("ChatActor#%d crashed; restarting from storage", slot.chat_id)
                    _fail_inflight(
                        slot, Unavailable("chat actor failed; retry", code="chat_unavailable")
                    )
                if not policy.crashed(trio.current_time()):
                    log.error("ChatActor#%d exceeded its restart budget; stopping it", slot.chat_id)
                    return
                self._restarts += 1
                slot.actor = None
        finally:
            # No await from here on: nothing can enqueue between the checks and the close.
            if self._slots.get(slot.chat_id) is slot:
                del self._slots[slot.chat_id]
                if not self._slots:
                    self._emptied.set()
                    self._emptied = trio.Event()
            if not slot.ready.is_set():
                slot.error = final
                slot.ready.set()
            fail_queued(slot.receive, final)
            slot.receive.close()

    async def _serve(self, slot: _Slot, actor: ChatActor) -> None:
        """Take batches from the mailbox until idle for ``idle_seconds``."""
        limit = self.config.group_commit_max
        while True:
            if slot.retired is not None:
                raise slot.retired
            with trio.move_on_after(self.config.idle_seconds) as idle:
                slot.idle = idle
                try:
                    first = await slot.receive.receive()
                finally:
                    slot.idle = None
            if slot.retired is not None:
                # Retired while waiting: a call just taken fails with the rest.
                if not idle.cancelled_caught:
                    first.fail(slot.retired)
                raise slot.retired
            if idle.cancelled_caught:
                stats = slot.receive.statistics()
                if stats.current_buffer_used == 0 and stats.tasks_waiting_send == 0:
                    return
                continue
            batch = [first]
            while len(batch) < limit:
                try:
                    batch.append(slot.receive.receive_nowait())
                except trio.WouldBlock:
                    break
            await actor.handle_batch(batch)


def _fail_inflight(slot: _Slot, error: FechatterError) -> None:
    if slot.actor is not None:
        for call in slot.actor.inflight:
            call.fail(error)
        slot.actor.inflight = []
