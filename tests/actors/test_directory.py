"""The actor core against a real SQLite file: group commit, supervision, reaping, timeouts."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Sequence
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from fechatter.actors.commands import DeleteChat, SendMessage, SendResult
from fechatter.actors.directory import Directory, DirectoryConfig
from fechatter.actors.user import UserHub
from fechatter.errors import Invalid, NotFound, Unavailable
from fechatter.events import Event
from fechatter.models import ChatType, Inserted, NewMessage, Role
from fechatter.storage.sqlite import SqliteStorage, open_sqlite_storage


@pytest.fixture
async def storage(tmp_path: Path) -> AsyncIterator[SqliteStorage]:
    async with open_sqlite_storage(str(tmp_path / "actors.db")) as s:
        yield s


async def _chat(storage: Any, members: int = 3) -> tuple[int, list[int]]:
    ids = []
    for i in range(members):
        user, _ = await storage.create_user(f"u{i}", f"u{i}@example.com", "hash", None)
        ids.append(user.id)
    ws = await storage.create_workspace("ws", None, ids[0])
    for uid in ids[1:]:
        await storage.add_workspace_member(ws.id, uid, Role.MEMBER)
    chat = await storage.create_chat(ws.id, ChatType.GROUP, None, None, ids[0], ids)
    return chat.id, ids


def _send(sender: int, text: str, client_id: str | None = None) -> SendMessage:
    return SendMessage(NewMessage(sender, text, (), None, client_id))


class FlakyStorage:
    """The real storage, except that chosen ``insert_messages`` calls raise (a bug stand-in)."""

    def __init__(self, inner: SqliteStorage, fail_calls: set[int], *, after_commit: bool) -> None:
        self._inner = inner
        self._fail_calls = fail_calls
        self._after_commit = after_commit
        self.insert_calls = 0
        self.batch_sizes: list[int] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def insert_messages(self, chat_id: int, batch: Sequence[NewMessage]) -> list[Inserted]:
        self.insert_calls += 1
        self.batch_sizes.append(len(batch))
        fail = self.insert_calls in self._fail_calls
        if fail and not self._after_commit:
            raise RuntimeError("injected failure before commit")
        result = await self._inner.insert_messages(chat_id, batch)
        if fail:
            raise RuntimeError("injected failure after commit")
        return result


async def test_group_commit_gapless(storage: SqliteStorage, nursery: trio.Nursery) -> None:
    chat_id, (a, b, c) = await _chat(storage)
    directory = Directory(storage, UserHub(), nursery)
    before = storage.statistics()
    results: list[SendResult] = []

    async def send(i: int) -> None:
        results.append(await directory.call(chat_id, _send((a, b, c)[i % 3], f"m{i}")))

    async with trio.open_nursery() as senders:
        for i in range(50):
            senders.start_soon(send, i)
    after = storage.statistics()
    assert sorted(r.message.seq for r in results) == list(range(1, 51))
    assert all(r.created for r in results)
    assert after.messages_inserted - before.messages_inserted == 50
    batches = after.message_batches - before.message_batches
    assert batches <= 5, f"{batches} transactions for 50 concurrent sends"
    page = await storage.list_messages(chat_id, limit=200, before=None, after=None)
    assert len(page.items) == 50


async def test_same_client_id_in_one_batch_is_one_message(
    storage: SqliteStorage, nursery: trio.Nursery
) -> None:
    chat_id, (a, _, _) = await _chat(storage)
    directory = Directory(storage, UserHub(), nursery)
    results: list[SendResult] = []

    async def send() -> None:
        results.append(await directory.call(chat_id, _send(a, "x", client_id="k")))

    async with trio.open_nursery() as senders:
        for _ in range(20):
            senders.start_soon(send)
    assert sum(r.created for r in results) == 1
    assert {r.message.id for r in results} == {results[0].message.id}


# The injected storage failure crashes the actor on purpose; the supervisor logs it.
INJECTED_CRASH = pytest.mark.expect_log_errors(
    r"ChatActor#\d+ crashed; restarting", r"injected failure", reason="FlakyStorage raises"
)


@INJECTED_CRASH
@pytest.mark.parametrize("after_commit", [False, True])
async def test_crashed_actor_restarts_and_loses_no_acknowledged_message(
    storage: SqliteStorage, nursery: trio.Nursery, after_commit: bool
) -> None:
    chat_id, (a, b, _) = await _chat(storage)
    flaky = FlakyStorage(storage, {2}, after_commit=after_commit)
    directory = Directory(flaky, UserHub(), nursery)
    acked: list[int] = []
    failed = 0

    async def send(i: int) -> None:
        nonlocal failed
        try:
            result = await directory.call(chat_id, _send(a if i % 2 else b, f"m{i}"))
        except Unavailable:
            failed += 1
        else:
            acked.append(result.message.id)

    for round_ in range(3):
        async with trio.open_nursery() as senders:
            for i in range(10):
                senders.start_soon(send, round_ * 10 + i)
    assert directory.statistics().restarts == 1
    assert failed > 0
    stored = (await storage.list_messages(chat_id, limit=200, before=None, after=None)).items
    assert set(acked) <= {m.id for m in stored}
    assert sorted(m.seq for m in stored) == list(range(1, len(stored) + 1))
    # The actor works after the restart.
    result = await directory.call(chat_id, _send(a, "after"))
    assert result.message.seq == len(stored) + 1


@INJECTED_CRASH
@pytest.mark.expect_log_errors(r"exceeded its restart budget", reason="the budget runs out")
async def test_restart_budget_exhausted_answers_unavailable(
    storage: SqliteStorage, nursery: trio.Nursery
) -> None:
    chat_id, (a, _, _) = await _chat(storage)
    flaky = FlakyStorage(storage, set(range(1, 100)), after_commit=False)
    config = DirectoryConfig(restart_budget=2)
    directory = Directory(flaky, UserHub(), nursery, config)
    with trio.fail_after(5):
        for _ in range(3):
            with pytest.raises(Unavailable):
                await directory.call(chat_id, _send(a, "x"))
    assert directory.statistics().restarts == 2
    assert not directory.is_running(chat_id)


async def test_unknown_chat_is_not_found(storage: SqliteStorage, nursery: trio.Nursery) -> None:
    directory = Directory(storage, UserHub(), nursery)
    with pytest.raises(NotFound):
        await directory.call(12345, _send(1, "x"))
    assert directory.statistics().chat_actors == 0


async def test_deleted_chat_fails_queued_calls_with_not_found(
    storage: SqliteStorage, nursery: trio.Nursery
) -> None:
    chat_id, (a, _, _) = await _chat(storage)
    directory = Directory(storage, UserHub(), nursery)
    await directory.call(chat_id, _send(a, "warm up"))
    outcomes: list[str] = []

    async def send() -> None:
        try:
            await directory.call(chat_id, _send(a, "late"))
            outcomes.append("sent")
        except NotFound:
            outcomes.append("not found")

    async with trio.open_nursery() as n:
        n.start_soon(directory.call, chat_id, DeleteChat(a))
        # The actor is now inside the deletion's storage call: the sends queue behind it.
        await trio.testing.wait_all_tasks_blocked()
        for _ in range(5):
            n.start_soon(send)
    assert outcomes == ["not found"] * 5
    assert not directory.is_running(chat_id)


async def test_idle_actor_is_reaped(
    storage: SqliteStorage, nursery: trio.Nursery, mock_clock: trio.testing.MockClock
) -> None:
    chat_id, (a, _, _) = await _chat(storage)
    directory = Directory(storage, UserHub(), nursery, DirectoryConfig(idle_seconds=60))
    await directory.call(chat_id, _send(a, "x"))
    assert directory.is_running(chat_id)
    mock_clock.autojump_threshold = 0  # from here on only timers run; no storage threads
    await trio.sleep(59)
    assert directory.is_running(chat_id)
    await trio.sleep(2)
    assert not directory.is_running(chat_id)
    mock_clock.autojump_threshold = float("inf")
    result = await directory.call(chat_id, _send(a, "y"))
    assert result.message.seq == 2


class StuckStorage(FlakyStorage):
    async def insert_messages(self, chat_id: int, batch: Sequence[NewMessage]) -> list[Inserted]:
        await trio.sleep_forever()
        raise AssertionError("unreachable")


async def test_call_times_out_with_unavailable(
    storage: SqliteStorage, nursery: trio.Nursery, mock_clock: trio.testing.MockClock
) -> None:
    chat_id, (a, _, _) = await _chat(storage)
    stuck = StuckStorage(storage, set(), after_commit=False)
    directory = Directory(stuck, UserHub(), nursery, DirectoryConfig(call_timeout=10))
    await storage.load_chat_state(chat_id)
    # Warm the actor (its state load runs in a thread) before letting the clock jump.
    from fechatter.actors.commands import Typing

    await directory.call(chat_id, Typing(a))
    mock_clock.autojump_threshold = 0
    start = trio.current_time()
    with pytest.raises(Unavailable):
        await directory.call(chat_id, _send(a, "x"))
    assert trio.current_time() - start == pytest.approx(10)


async def test_shutdown_cancels_actors(storage: SqliteStorage) -> None:
    chat_id, (a, _, _) = await _chat(storage)
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            directory = Directory(storage, UserHub(), nursery)
            await directory.call(chat_id, _send(a, "x"))
            assert directory.statistics().chat_actors == 1
            nursery.cancel_scope.cancel()
    assert directory.statistics().chat_actors == 0


class RecordingHub(UserHub):
    """The real hub, remembering what was published."""

    def __init__(self) -> None:
        super().__init__()
        self.published: list[str] = []

    def publish(self, user_ids: Iterable[int], event: Event) -> None:
        self.published.append(event.name)
        super().publish(user_ids, event)


@INJECTED_CRASH
async def test_a_send_that_fails_to_commit_pushes_nothing(
    storage: SqliteStorage, nursery: trio.Nursery
) -> None:
    chat_id, (a, _, _) = await _chat(storage)
    hub = RecordingHub()
    flaky = FlakyStorage(storage, {1}, after_commit=False)
    directory = Directory(flaky, hub, nursery)
    with pytest.raises(Unavailable):
        await directory.call(chat_id, _send(a, "lost"))
    assert hub.published == []
    await directory.call(chat_id, _send(a, "kept"))
    assert hub.published == ["message.created"]


async def test_a_send_storage_refuses_fails_alone_in_its_group_commit(
    storage: SqliteStorage, nursery: trio.Nursery
) -> None:
    """Kind 2 of issue 9: text the driver refuses (here a lone surrogate, past the edge that
    normally stops it) fails that send alone; the batch's other sends commit, no restart."""
    chat_id, (a, b, c) = await _chat(storage)
    recorder = FlakyStorage(storage, set(), after_commit=False)
    directory = Directory(recorder, UserHub(), nursery)
    outcomes: dict[str, str] = {}

    async def send(sender: int, text: str) -> None:
        try:
            await directory.call(chat_id, _send(sender, text))
            outcomes[text] = "sent"
        except Invalid as exc:
            outcomes[text] = exc.code

    # Queued together, the sends reach storage as one batch, then one at a time.
    async with trio.open_nursery() as senders:
        for i, text in enumerate(["m0", "bad \ud83d", "m2", "m3"]):
            senders.start_soon(send, (a, b, c)[i % 3], text)
    assert outcomes == {"m0": "sent", "bad \ud83d": "unstorable_text", "m2": "sent", "m3": "sent"}
    stored = (await storage.list_messages(chat_id, limit=10, before=None, after=None)).items
    assert sorted(m.content for m in stored) == ["m0", "m2", "m3"]
    assert sorted(m.seq for m in stored) == [1, 2, 3]
    assert directory.statistics().restarts == 0
    assert recorder.batch_sizes == [4, 1, 1, 1, 1]
