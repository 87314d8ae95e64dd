"""``fechatter export`` reads one snapshot (docs/archive.md "One snapshot"), on a real SQLite
file and a real PostgreSQL database: writes made while an export runs — between two chats of
it, at a point the test chooses through the exporter's ``after_chat`` hook — are in none of
its rows, and the archive imports. Its manifest's time is the snapshot's; a PostgreSQL
session is not ended for idling within ``--snapshot-limit``, and one the server ends anyway
is said as such (not "cannot connect"); a blob collected between the snapshot and its copy
is one actionable line; ``--snapshot-limit`` reaches the export through the command line."""

from __future__ import annotations

import hashlib
import json
import time
import zipfile
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
import trio

from fechatter import cli, cli_errors
from fechatter.config import Settings
from fechatter.domain.archive import BlobCollected, export_workspace, import_archive
from fechatter.errors import DatabaseUnreachable, Unavailable
from fechatter.models import ChatType, NewMessage, Role, utc_now
from fechatter.storage import open_storage
from fechatter.storage.archive import ArchiveStore
from fechatter.storage.blobs import BlobMissing, LocalBlobStore
from fechatter.storage.core import SqlStorage
from fechatter.storage.postgres import open_postgres_storage
from tests.admin.cli import fechatter, one_line_refusal
from tests.conftest import api_client, make_chat, running_server
from tests.conftest import make_workspace as http_workspace
from tests.http.test_files import send as send_files
from tests.http.test_files import uploaded
from tests.pg import PgServer
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
        store = ArchiveStore(storage, snapshot_limit=0.2)
        reached: list[int] = []

        async def hang(chat_id: int) -> None:
            reached.append(chat_id)
            await trio.sleep_forever()  # an exporter that stalls inside its snapshot

        chat = await storage.create_chat(ws.id, ChatType.GROUP, None, None, owner.id, [owner.id])
        path = tmp_path / "ws.zip"
        with pytest.raises(Unavailable, match=r"snapshot was open longer than 0\.2 s"):
            await export_workspace(store, blobs, ws.id, path, after_chat=hang)
        assert reached == [chat.id]
        assert not path.exists()
        assert not path.with_name("ws.zip.partial").exists()
        # The snapshot ended with the export: the next one opens a new one and sees the new chat.
        second = await storage.create_chat(ws.id, ChatType.GROUP, None, None, owner.id, [owner.id])
        # The default limit: 0.2 s is a ceiling a whole export can pass on a loaded machine
        # (CI: this export, not the stalled one, was refused).
        result = await export_workspace(ArchiveStore(storage), blobs, ws.id, path)
        assert result.counts["chats"] == 2
        assert second.id > chat.id


async def test_the_snapshot_limit_flag_takes_seconds_up_to_a_week(tmp_path: Path) -> None:
    base = ["export", "--workspace", "1", str(tmp_path / "x.zip")]
    for bad in ("0", "-1", "soon", "604801"):
        with pytest.raises(SystemExit) as exited:
            await trio.to_thread.run_sync(cli.main, [*base, "--snapshot-limit", bad])
        assert exited.value.code == 2


async def test_the_manifest_is_stamped_when_the_snapshot_opens(
    storage: SqlStorage, blobs: LocalBlobStore, tmp_path: Path
) -> None:
    with trio.fail_after(CEILING):
        owner, ws = await make_workspace(storage)
        await storage.create_chat(ws.id, ChatType.GROUP, None, None, owner.id, [owner.id])
        inside: list[str] = []

        async def note_the_time(chat_id: int) -> None:
            inside.append(utc_now())

        path = tmp_path / "ws.zip"
        await export_workspace(ArchiveStore(storage), blobs, ws.id, path, after_chat=note_the_time)
        with zipfile.ZipFile(path) as zf:
            exported_at = json.loads(zf.read("manifest.json"))["exported_at"]
        # Same format (microseconds, UTC): the string order is the time order. Stamped when
        # the snapshot opened, before any chat was read; not after the rows and blobs.
        assert exported_at <= inside[0]


def _database(url: str) -> str:
    return url.rsplit("/", 1)[1]


async def _idle_in_transaction_for(server: PgServer, database: str, seconds: float) -> None:
    """Return once the server has seen the session of ``database`` idle in its transaction
    for over ``seconds`` (its own clock: the one its idle timeout runs on); fail at once if
    the server ended it first. PostgreSQL announces no such moment, so this polls
    ``pg_stat_activity`` every 50 ms (the caller bounds it)."""
    while True:
        with server.connect() as conn:
            row = conn.execute(
                "SELECT count(*), count(*) FILTER (WHERE now() - state_change"
                " > make_interval(secs => %s)) FROM pg_stat_activity"
                " WHERE datname = %s AND state = 'idle in transaction'",
                (seconds, database),
            ).fetchone()
        assert row is not None
        assert row[0] == 1, "the server ended the snapshot's session"
        if row[1]:
            return
        await trio.sleep(0.05)


async def test_a_stall_within_the_limit_outlives_the_servers_idle_bound(
    pg_server: PgServer, pg_database: str, blobs: LocalBlobStore, tmp_path: Path
) -> None:
    """The node's session bound (``idle_in_transaction_timeout``, a real setting: 1 s here,
    30 s by default) does not end an export's snapshot: inside it, the export's own limit
    does (``SET LOCAL``). The exporter stalls between two reads until the server has seen
    its session idle for longer than that bound (a slow disk under the archive)."""
    with trio.fail_after(CEILING):
        async with open_postgres_storage(pg_database, idle_in_transaction_timeout=1.0) as pg:
            owner, ws = await make_workspace(pg)
            for n in range(2):
                chat = await pg.create_chat(ws.id, ChatType.GROUP, None, None, owner.id, [owner.id])
                await send(pg, chat.id, owner, f"m{n}")
            stalled: list[int] = []

            async def stall(chat_id: int) -> None:
                if not stalled:
                    stalled.append(chat_id)
                    await _idle_in_transaction_for(pg_server, _database(pg_database), 1.5)

            path = tmp_path / "ws.zip"
            store = ArchiveStore(pg, snapshot_limit=30)
            result = await export_workspace(store, blobs, ws.id, path, after_chat=stall)
            assert stalled
            assert (result.counts["chats"], result.counts["messages"]) == (2, 2)


async def test_a_snapshot_the_database_ends_is_said_as_such(
    pg_server: PgServer, pg_database: str, blobs: LocalBlobStore, tmp_path: Path
) -> None:
    """An open snapshot's session ended by the server (here an administrator's
    ``pg_terminate_backend``; the same for the idle-in-transaction timeout or a restart) is
    no failure to connect: its one line says the database ended the snapshot."""
    with trio.fail_after(CEILING):
        async with open_storage(pg_database) as opened:
            assert isinstance(opened, SqlStorage)
            owner, ws = await make_workspace(opened)
            for _ in range(2):
                await opened.create_chat(ws.id, ChatType.GROUP, None, None, owner.id, [owner.id])

            async def terminate(chat_id: int) -> None:
                with pg_server.connect() as conn:
                    row = conn.execute(
                        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                        " WHERE datname = %s AND state = 'idle in transaction'",
                        (_database(pg_database),),
                    ).fetchone()
                assert row == (1,)  # the export's snapshot, and only it

            path = tmp_path / "ws.zip"
            with pytest.raises(Unavailable) as failed:
                await export_workspace(
                    ArchiveStore(opened), blobs, ws.id, path, after_chat=terminate
                )
            assert not isinstance(failed.value, DatabaseUnreachable)
            line = cli_errors.database_error(failed.value, pg_database)
            assert line == (
                "the database ended the snapshot:"
                " terminating connection due to administrator command"
            ), line
            assert not path.exists()
            assert not path.with_name("ws.zip.partial").exists()
            assert await opened.get_user(owner.id) is not None  # the pool reconnects


async def test_the_snapshot_limit_flag_bounds_a_real_export(
    pg_server: PgServer, pg_database: str, tmp_path: Path
) -> None:
    """``--snapshot-limit 0.5`` reaches the export: with its first read held behind another
    session's lock the export fails on that limit (not the 10 s operation timeout), writes
    nothing; with the lock gone the command exports (at the default limit: 0.5 s is a ceiling
    a whole export can pass on a loaded machine)."""
    with trio.fail_after(CEILING):
        async with open_storage(pg_database) as opened:
            assert isinstance(opened, SqlStorage)
            _, ws = await make_workspace(opened)
        path = tmp_path / "ws.zip"
        command = ["export", "--workspace", str(ws.id), str(path), "--snapshot-limit", "0.5"]
        files = tmp_path / "files"
        with pg_server.connect(_database(pg_database)) as holder, holder.transaction():
            holder.execute("LOCK TABLE workspaces IN ACCESS EXCLUSIVE MODE")
            held = await fechatter(*command, "--database-url", pg_database, files_dir=files)
        one_line_refusal(
            held, "fechatter export: the export's snapshot was open longer than 0.5 s; nothing"
        )
        assert not path.exists()
        assert not path.with_name("ws.zip.partial").exists()
        unlimited = command[: command.index("--snapshot-limit")]
        done = await fechatter(*unlimited, "--database-url", pg_database, files_dir=files)
        assert done.returncode == 0, done.stderr
        assert path.exists()


async def test_a_blob_collected_during_the_export_is_one_actionable_line(
    nursery: trio.Nursery, settings_factory: Callable[..., Settings], tmp_path: Path
) -> None:
    """Blobs are copied after the snapshot: a message deleted while the export runs and a
    collector pass meanwhile remove a blob its rows still name. The export fails with one
    line saying so (run it again), writes nothing; a blob missing while its upload row is
    still there (the wrong files directory) stays ``BlobMissing``."""
    settings = settings_factory()
    with trio.fail_after(CEILING):
        async with running_server(nursery, settings) as server, api_client(server) as api:
            files = server.files
            assert files is not None
            a, b = await api.signup(), await api.signup()
            ws = await http_workspace(a, b)
            chat = await make_chat(a, ws, "Single", b)
            data = b"an old attachment"
            sha256 = hashlib.sha256(data).hexdigest()
            f = await uploaded(a, data)
            r = await send_files(a, chat, [f["url"]])
            assert r.status_code == 201
            message_id = r.json()["id"]
            blobs = LocalBlobStore(settings.files_path)
            await blobs.open()

            async def delete_and_collect(chat_id: int) -> None:
                # Inside the snapshot: it still sees the message and its upload.
                d = await a.api.delete(f"/api/chats/{chat}/messages/{message_id}")
                assert d.status_code == 204
                # An hourly pass, the upload older than the grace: row and blob go.
                later = time.time() + 2 * settings.file_gc_grace
                assert await files.collect(now=later) == (1, 1)

            async with open_storage(settings.database_url) as opened:
                assert isinstance(opened, SqlStorage)
                store = ArchiveStore(opened)
                elsewhere = LocalBlobStore(tmp_path / "not-the-files-dir")
                await elsewhere.open()
                with pytest.raises(BlobMissing):
                    await export_workspace(store, elsewhere, ws, tmp_path / "x.zip")
                with pytest.raises(BlobCollected) as failed:
                    await export_workspace(
                        store, blobs, ws, tmp_path / "x.zip", after_chat=delete_and_collect
                    )
            assert str(failed.value) == (
                f"file {sha256} was collected during the export (its message was deleted"
                " after the export's snapshot); run the export again"
            )
            assert not (tmp_path / "x.zip").exists()
            assert not (tmp_path / "x.zip.partial").exists()
