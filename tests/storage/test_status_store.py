"""``StatusStore`` on every backend (issue 14 part B): chosen statuses with an injected
clock, expiry handed out once, workspace sharing, the member's own mute."""

from __future__ import annotations

import trio

from fechatter.models import ChatType, Role
from fechatter.status import ChosenStatus
from fechatter.storage import Storage
from fechatter.storage.status import StatusStore
from tests.storage.factories import make_group, make_user

CEILING = 20.0
T0 = 1_800_000_000.0  # epoch seconds: the injected "now"


async def test_chosen_statuses_follow_the_given_clock(storage: Storage) -> None:
    store = StatusStore(storage)
    with trio.fail_after(CEILING):
        _, (a, b, c), _ = await make_group(storage)
        await store.set(a.id, "busy", "focus", T0 + 60)
        await store.set(b.id, "away", None, None)
        assert await store.chosen([a.id, b.id, c.id], T0) == {
            a.id: ChosenStatus("busy", "focus", T0 + 60),
            b.id: ChosenStatus("away", None, None),
        }
        assert await store.chosen([a.id], T0 + 60) == {}  # lapsed at its expiry
        assert await store.next_expiry() == T0 + 60
        await store.set(a.id, "away", None, None)  # replaces text and expiry
        assert (await store.chosen([a.id], T0 + 600))[a.id] == ChosenStatus("away", None, None)
        assert await store.next_expiry() is None
        await store.clear(b.id)
        assert await store.chosen([b.id], T0) == {}
        assert await store.chosen([], T0) == {}


async def test_each_lapse_is_handed_out_once(storage: Storage) -> None:
    store = StatusStore(storage)
    with trio.fail_after(CEILING):
        _, (a, b, c), _ = await make_group(storage)
        await store.set(a.id, "busy", None, T0 + 10)
        await store.set(b.id, "away", None, T0 + 20)
        await store.set(c.id, "away", None, None)
        assert await store.expire(T0 + 9) == []
        got: list[list[int]] = []

        async def expire() -> None:
            got.append(await store.expire(T0 + 20))

        async with trio.open_nursery() as nursery:  # two nodes' timers at once
            nursery.start_soon(expire)
            nursery.start_soon(expire)
        assert sorted(uid for batch in got for uid in batch) == sorted([a.id, b.id])
        assert await store.next_expiry() is None
        assert set(await store.chosen([a.id, b.id, c.id], T0)) == {c.id}


async def test_sharing_a_workspace_and_muting(storage: Storage) -> None:
    store = StatusStore(storage)
    with trio.fail_after(CEILING):
        workspace, (a, b, _), chat = await make_group(storage)
        stranger = await make_user(storage, "stranger")
        assert await store.share_workspace(a.id, b.id)
        assert await store.share_workspace(b.id, a.id)
        assert not await store.share_workspace(a.id, stranger.id)
        assert await store.set_muted(chat.id, b.id, True)
        assert not await store.set_muted(chat.id, stranger.id, True)  # not a member
        view_b = await storage.get_chat_view(chat.id, b.id)
        view_a = await storage.get_chat_view(chat.id, a.id)
        assert view_b is not None
        assert view_a is not None
        assert (view_b.muted, view_a.muted) == (True, False)
        assert [c.muted for c in await storage.list_chats(b.id, workspace.id)] == [True]
        assert "muted" not in view_b.to_event_json()
        assert view_b.to_json()["muted"] is True
        await storage.add_workspace_member(workspace.id, stranger.id, Role.MEMBER)
        other = await storage.create_chat(
            workspace.id, ChatType.PUBLIC_CHANNEL, "general", None, a.id, [a.id]
        )
        outsider = await storage.get_chat_view(other.id, stranger.id)
        assert outsider is not None
        assert outsider.muted is False  # a non-member's view of a public channel
