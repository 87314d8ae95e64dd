"""``fechatter export`` reads one snapshot (docs/archive.md "One snapshot"), on a real SQLite
file and a real PostgreSQL database: writes made while an export runs — between two chats of
it, at a point the test chooses through the exporter's ``after_chat`` hook — are in none of
its rows, and the archive imports."""

from __future__ import annotations

import json
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio

from fechatter import cli
from fechatter.domain.archive import export_workspace, import_archive
from fechatter.errors import Unavailable
from fechatter.models import ChatType, NewMessage, Role
from fechatter.storage import open_storage
from fechatter.storage.archive import ArchiveStore
from fechatter.storage.blobs import LocalBlobStore
from fechatter.storage.core import SqlStorage
from tests.storage.factories import make_user, make_workspace, send

CEILING = 60


@pytest.fixture(params=["sqlite", "postgres"])
async def storage(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[SqlStorage]:
    """An empty, migrated database of each backend: a SQLite file in WAL mode, or a fresh
    PostgreSQL database of the suite's server."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'fechatter.db'}"
    else:
        url = request.getfixturevalue("pg_database")
    async with open_storage(url) as opened:
        assert isinstance(opened, SqlStorage)
        yield opened


@pytest.fixture
async def blobs(tmp_path: Path) -> LocalBlobStore:
    store = LocalBlobStore(tmp_path / "files")
    await store.open()
    return store


def sections(path: Path) -> dict[str, object]:
    """Every entry of an archive but the manifest's export time, parsed."""
    with zipfile.ZipFile(path) as zf:
        out: dict[str, object] = {}
        for name in zf.namelist():
            data = zf.read(name)
            if name.endswith(".jsonl"):
                out[name] = [json.loads(line) for line in data.splitlines()]
            elif name.endswith(".json"):
                out[name] = json.loads(data)
        manifest = out["manifest.json"]
        assert isinstance(manifest, dict)
        del manifest["exported_at"]
        return out


async def test_writes_during_an_export_are_not_in_it(
    storage: SqlStorage, blobs: LocalBlobStore, tmp_path: Path
) -> None:
    with trio.fail_after(CEILING):
        owner, ws = await make_workspace(storage)
        bo = await make_user(storage, "bo")
        carl = await make_user(storage, "carl")
        await storage.add_workspace_member(ws.id, bo.id, Role.MEMBER)
        pair = [owner.id, bo.id]
        first = await storage.create_chat(
            ws.id, ChatType.PUBLIC_CHANNEL, "first", None, owner.id, pair
        )
        later = await storage.create_chat(
            ws.id, ChatType.PUBLIC_CHANNEL, "later", None, owner.id, pair
        )
        a1, _a2 = await send(storage, first.id, owner, "a one", "a two")
        b1, b2 = await send(storage, later.id, bo, "b one", "b two")
        store = ArchiveStore(storage)
        reference = tmp_path / "reference.zip"
        await export_workspace(store, blobs, ws.id, reference)

        wrote: list[int] = []

        async def write_between_chats(chat_id: int) -> None:
            if chat_id != first.id:
                return
            wrote.append(chat_id)
            # New messages in the chat already exported and in the one not yet exported,
            # and in the later chat a reply (and thread reply) to one of them.
            await send(storage, first.id, owner, "late in first")
            (late,) = await send(storage, later.id, owner, "late in later")
            (reply,) = await storage.insert_messages(
                later.id,
                [NewMessage(bo.id, "reply to late", (), late.id, None, thread_id=late.id)],
            )
            assert reply.message is not None, reply.error
            # Changes to rows that were there when the export began.
            assert await storage.add_reaction(first.id, a1.id, bo.id, "👍", 20)
            assert await storage.add_reaction(later.id, b1.id, owner.id, "🎉", 20)
            await storage.edit_message(later.id, b1.id, "b one, edited", (), False)
            await storage.delete_message(later.id, b2.id)
            await storage.add_workspace_member(ws.id, carl.id, Role.MEMBER)
            await storage.add_chat_members(later.id, [carl.id], Role.MEMBER)
            assert await storage.add_reaction(later.id, b1.id, carl.id, "🎉", 20)
            await storage.update_user(owner.id, fullname="Renamed Owner")

        during = tmp_path / "during.zip"
        await export_workspace(store, blobs, ws.id, during, after_chat=write_between_chats)
        assert wrote == [first.id]
        page = await storage.list_messages(later.id, limit=10, before=None, after=0)
        assert [m.seq for m in page.items] == [1, 2, 3, 4]  # the late writes are stored

        got = sections(during)
        messages = got["messages.jsonl"]
        assert isinstance(messages, list)
        last_seq = {m["chat_id"]: m["seq"] for m in messages}
        assert last_seq == {first.id: 2, later.id: 2}  # the snapshot's seqs
        # Nothing written after the export began: the archive is the one taken before.
        assert got == sections(reference)

        result = await import_archive(store, blobs, during, "copy")
        assert (result.chats, result.messages, result.reactions) == (2, 4, 0)


async def test_a_snapshot_held_past_its_limit_fails_and_writes_nothing(
    storage: SqlStorage, blobs: LocalBlobStore, tmp_path: Path
) -> None:
    with trio.fail_after(CEILING):
        owner, ws = await make_workspace(storage)
        store = ArchiveStore(storage, snapshot_limit=1.0)
        reached: list[int] = []

        async def hang(chat_id: int) -> None:
            reached.append(chat_id)
            await trio.sleep_forever()  # an exporter that stalls inside its snapshot

        chat = await storage.create_chat(ws.id, ChatType.GROUP, None, None, owner.id, [owner.id])
        path = tmp_path / "ws.zip"
        with pytest.raises(Unavailable, match="snapshot was open longer than 1 s"):
            await export_workspace(store, blobs, ws.id, path, after_chat=hang)
        assert reached == [chat.id]
        assert not path.exists()
        assert not path.with_name("ws.zip.partial").exists()
        # The snapshot ended with the export: the next one opens a new one and sees the new chat.
        second = await storage.create_chat(ws.id, ChatType.GROUP, None, None, owner.id, [owner.id])
        result = await export_workspace(store, blobs, ws.id, path)
        assert result.counts["chats"] == 2
        assert second.id > chat.id


async def test_the_snapshot_limit_flag_takes_seconds_up_to_a_week(tmp_path: Path) -> None:
    base = ["export", "--workspace", "1", str(tmp_path / "x.zip")]
    for bad in ("0", "-1", "soon", "604801"):
        with pytest.raises(SystemExit) as exited:
            await trio.to_thread.run_sync(cli.main, [*base, "--snapshot-limit", bad])
        assert exited.value.code == 2
