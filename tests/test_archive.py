"""``fechatter export`` / ``fechatter import`` (issue 17, docs/archive.md): a round trip into a
fresh database and into the same one as a second copy keeps messages, seq, reactions, threads,
tombstones, mentions (remapped) and file bytes; a bad archive is one line, exit 1, nothing
written. Runs against the suite's backend (SQLite, PostgreSQL, a cluster's database)."""

from __future__ import annotations

import json
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trio

from fechatter import cli
from fechatter.config import Settings
from fechatter.models import UserStatus
from fechatter.storage import open_storage
from fechatter.storage.blobs import LocalBlobStore
from fechatter.storage.core import SqlStorage
from fechatter.storage.files import URL_PREFIX, FileStore
from tests.conftest import Api, make_chat, make_workspace, suite_backend, upload_file
from tests.http.test_files import png
from tests.pg import PgServer

CEILING = 60


async def run_cli(*argv: str) -> int:
    """``fechatter <argv>`` as the operator runs it (its own trio loop, on a worker thread)."""
    return await trio.to_thread.run_sync(cli.main, list(argv))


def db_flags(settings: Settings) -> tuple[str, ...]:
    return ("--database-url", settings.database_url, "--files-dir", str(settings.files_path))


def fresh_database(tmp_path: Path, request: pytest.FixtureRequest, name: str) -> Settings:
    """Settings naming a new empty database and files directory (SQLite, or PostgreSQL when
    the suite's backend is)."""
    if suite_backend() == "sqlite":
        url = f"sqlite:///{tmp_path / (name + '.db')}"
    else:
        server: PgServer = request.getfixturevalue("pg_server")
        url = server.new_database()
    return Settings(database_url=url, files_dir=tmp_path / f"{name}-files")


async def snapshot(settings: Settings, email: str, ws_id: int) -> dict[str, Any]:
    """The workspace as ``email`` (a member of every chat) sees it in storage, with every
    id replaced by what it names (emails, seqs, file bytes), so two copies compare equal."""
    async with open_storage(settings.database_url) as storage:
        assert isinstance(storage, SqlStorage)
        files, blobs = FileStore(storage), LocalBlobStore(settings.files_path)
        me = await storage.get_user_by_email(email)
        assert me is not None
        ws = await storage.get_workspace(ws_id)
        assert ws is not None
        members = await storage.list_workspace_members(ws_id)
        emails = {m.user.id: m.user.email for m in members}

        async def data(url: str) -> bytes:
            record = await files.get(url.removeprefix(URL_PREFIX))
            assert record is not None
            return b"".join([c async for c in blobs.read(record.sha256)])

        out: dict[str, Any] = {
            "workspace": (ws.name, ws.description, emails[ws.owner_id]),
            "members": sorted(
                [
                    (m.user.email, m.role.value, m.user.avatar and await data(m.user.avatar))
                    for m in members
                ]
            ),
            "chats": {},
        }
        for chat in await storage.list_chats(me.id, ws_id):
            page = await storage.list_messages(chat.id, limit=200, before=None, after=0)
            seqs = {m.id: m.seq for m in page.items}
            rows = []
            for m in page.items:
                content = m.content
                for uid, mail in emails.items():
                    content = content.replace(f"<@{uid}>", f"<@{mail}>")
                attached = [await data(url) for url in m.files]
                rows.append(
                    (
                        m.seq,
                        emails[m.sender_id],
                        content,
                        attached,
                        seqs.get(m.reply_to) if m.reply_to else None,
                        seqs.get(m.thread_id) if m.thread_id else None,
                        m.created_at,
                        m.edited_at,
                        m.deleted,
                        m.reply_count,
                        m.last_reply_at,
                        [emails[u] for u in m.mentions],
                        m.mentions_channel,
                        [(r.emoji, [emails[u] for u in r.user_ids]) for r in m.reactions],
                    )
                )
            chat_members = await storage.list_chat_members(chat.id)
            key = f"{chat.record.type.value}:{chat.record.name}"
            out["chats"][key] = {
                "unread": chat.unread_count,
                "last": chat.last_message.seq if chat.last_message else None,
                "members": sorted((emails[m.user_id], m.role.value) for m in chat_members),
                "messages": rows,
            }
        return out


async def populate(api: Api) -> tuple[Any, Any, int, int]:
    """Two users (one with an avatar), a channel with a thread, a quote-reply, a tombstone,
    an edit, a mention, reactions and a file, and a Single chat; (owner, member, workspace id,
    channel id)."""
    a, b = await api.signup("ana"), await api.signup("bo")
    ws = await make_workspace(a, b)
    chan = await make_chat(a, ws, "PublicChannel", b, name="general")
    r = await b.api.post("/api/files", files={"file": ("me.png", png(40, 30), "image/png")})
    assert r.status_code == 201, r.text
    assert (await b.api.patch("/api/users/me", json={"avatar": r.json()["url"]})).is_success
    url = await upload_file(a, b"archived bytes \x00\x01", "notes.txt")
    base = f"/api/chats/{chan}/messages"
    r = await a.api.post(base, json={"content": f"root for <@{b.id}> zebraword", "files": [url]})
    assert r.status_code == 201, r.text
    root = r.json()["id"]
    for body in (
        {"content": "first reply", "thread_id": root},
        {"content": "second reply", "thread_id": root},
        {"content": "quoting", "reply_to": root},
    ):
        r = await b.api.post(base, json=body)
        assert r.status_code == 201, r.text
    first_reply, quote = r.json()["id"] - 2, r.json()["id"]
    assert (await b.api.delete(f"{base}/{first_reply}")).status_code == 204
    assert (await b.api.patch(f"{base}/{quote}", json={"content": "quoting, edited"})).is_success
    assert (await b.api.put(f"{base}/{root}/reactions/%F0%9F%91%8D")).status_code == 204
    assert (await a.api.put(f"{base}/{root}/reactions/:partyparrot:")).status_code == 204
    single = await make_chat(a, ws, "Single", b)
    r = await a.api.post(f"/api/chats/{single}/messages", json={"content": "direct"})
    assert r.status_code == 201, r.text
    return a, b, ws, chan


async def test_round_trip_fresh_and_same_database(
    api: Api,
    settings_factory: Callable[..., Settings],
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    with trio.fail_after(CEILING):
        a, _b, ws, _chan = await populate(api)
        live = settings_factory()
        archive = tmp_path / "ws.zip"
        assert await run_cli("export", "--workspace", str(ws), str(archive), *db_flags(live)) == 0
        with zipfile.ZipFile(archive) as zf:
            manifest = json.loads(zf.read("manifest.json"))
        assert manifest["counts"]["messages"] == 5
        assert manifest["counts"]["reactions"] == 2
        assert manifest["counts"]["files"] == 2  # the attachment and the avatar
        assert manifest["counts"]["blobs"] == 3  # and the avatar's thumbnail
        before = await snapshot(live, a.email, ws)

        fresh = fresh_database(tmp_path, request, "fresh")
        async with open_storage(fresh.database_url) as storage:
            # Someone already there: every imported id differs from the archived one.
            await storage.create_user("Earlier", "earlier@example.com", "!", "earlier")
        assert await run_cli("import", str(archive), *db_flags(fresh)) == 0
        async with open_storage(fresh.database_url) as storage:
            ana = await storage.get_user_by_email(a.email)
            assert ana is not None
            assert ana.status is UserStatus.PENDING  # activated by a reset link or bound invite
            (copy,) = await storage.list_workspaces(ana.id)
            assert ana.id != a.id
        assert await snapshot(fresh, a.email, copy.id) == before

        flags = ("--workspace-name", "second copy", *db_flags(live))
        assert await run_cli("import", str(archive), *flags) == 0
        r = await a.api.get("/api/workspaces")
        second = next(w["id"] for w in r.json() if w["name"] == "second copy")
        again = await snapshot(live, a.email, second)
        assert again["chats"] == before["chats"]

        # The copy is live: history, search and a new message (next seq) through the API.
        r = await a.api.get("/api/chats", params={"workspace_id": second})
        chan = next(c["id"] for c in r.json() if c["name"] == "general")
        r = await a.api.get(f"/api/chats/{chan}/messages")
        assert [m["seq"] for m in r.json()["items"]] == [4, 3, 2, 1]
        r = await a.api.get(
            "/api/search/messages", params={"q": "zebraword", "workspace_id": second}
        )
        assert [i["message"]["chat_id"] for i in r.json()["items"]] == [chan]
        r = await a.api.post(f"/api/chats/{chan}/messages", json={"content": "after import"})
        assert r.status_code == 201, r.text
        assert r.json()["seq"] == 5


def rewrite(src: Path, dst: Path, changes: dict[str, bytes | None]) -> None:
    """A copy of the zip ``src`` with entries replaced (bytes) or left out (None)."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for item in zin.infolist():
            if item.filename in changes:
                data = changes[item.filename]
                if data is not None:
                    zout.writestr(item.filename, data)
            else:
                zout.writestr(item, zin.read(item))


async def test_bad_archives_are_one_line_and_write_nothing(
    api: Api,
    settings_factory: Callable[..., Settings],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    with trio.fail_after(CEILING):
        a, _b, ws, _ = await populate(api)
        good = tmp_path / "good.zip"
        assert (
            await run_cli(
                "export", "--workspace", str(ws), str(good), *db_flags(settings_factory())
            )
            == 0
        )
        with zipfile.ZipFile(good) as zf:
            manifest = json.loads(zf.read("manifest.json"))
            messages = zf.read("messages.jsonl")
            reactions = zf.read("reactions.jsonl")
        lines = reactions.splitlines(keepends=True)
        unknown = json.loads(lines[-1])
        unknown["message_id"] = 987654
        cases: dict[str, tuple[dict[str, bytes | None], str]] = {
            "missing": ({"manifest.json": None}, "manifest.json is missing"),
            "version": (
                {"manifest.json": json.dumps({**manifest, "version": 99}).encode()},
                "archive version 99 is not supported",
            ),
            "truncated": ({"messages.jsonl": messages[:-7]}, "messages.jsonl line 5: truncated"),
            "short": (
                {"messages.jsonl": b"".join(messages.splitlines(keepends=True)[:-1])},
                "messages.jsonl: 4 rows where manifest.json counts 5",
            ),
            "unknown": (
                {"reactions.jsonl": b"".join([*lines[:-1], json.dumps(unknown).encode() + b"\n"])},
                "unknown message id 987654",
            ),
        }
        target = Settings(
            database_url=f"sqlite:///{tmp_path / 'target.db'}", files_dir=tmp_path / "tf"
        )
        capsys.readouterr()
        for name, (changes, expected) in cases.items():
            bad = tmp_path / f"{name}.zip"
            rewrite(good, bad, changes)
            assert await run_cli("import", str(bad), *db_flags(target)) == 1, name
            err = capsys.readouterr().err
            assert err.count("\n") == 1, err
            assert expected in err, (name, err)
        # Every failure came after the users (and, for the last two, the messages) were
        # written in the transaction: none of it is there.
        async with open_storage(target.database_url) as storage:
            assert await storage.get_user_by_email(a.email) is None
        not_zip = tmp_path / "not.zip"
        not_zip.write_bytes(b"plain text")
        assert await run_cli("import", str(not_zip), *db_flags(target)) == 1
        assert "not a zip archive" in capsys.readouterr().err
        assert (
            await run_cli(
                "export", "--workspace", "999999", str(tmp_path / "x.zip"), *db_flags(target)
            )
            == 1
        )
        assert "no workspace with id 999999" in capsys.readouterr().err
        assert not (tmp_path / "x.zip").exists()


async def test_round_trip_across_dialects_into_postgres(
    api: Api, settings_factory: Callable[..., Settings], tmp_path: Path, pg_server: PgServer
) -> None:
    """Whatever the suite's backend, one round trip ends in a fresh PostgreSQL database."""
    pg_database = pg_server.new_database()  # not the fixture: the server's own in pg modes
    with trio.fail_after(CEILING):
        a, _b, ws, _ = await populate(api)
        live = settings_factory()
        archive = tmp_path / "ws.zip"
        assert await run_cli("export", "--workspace", str(ws), str(archive), *db_flags(live)) == 0
        target = Settings(database_url=pg_database, files_dir=tmp_path / "pg-files")
        assert await run_cli("import", str(archive), *db_flags(target)) == 0
        async with open_storage(pg_database) as storage:
            ana = await storage.get_user_by_email(a.email)
            assert ana is not None
            (copy,) = await storage.list_workspaces(ana.id)
        assert await snapshot(target, a.email, copy.id) == await snapshot(live, a.email, ws)


def edit_rows(
    zf: zipfile.ZipFile, section: str, change: Callable[[dict[str, Any]], dict[str, Any] | None]
) -> bytes:
    """``section``.jsonl with each row passed through ``change`` (None: left out)."""
    rows = [json.loads(line) for line in zf.read(f"{section}.jsonl").splitlines()]
    changed = [c for c in (change(r) for r in rows) if c is not None]
    return b"".join(json.dumps(r).encode() + b"\n" for r in changed)


async def test_rows_the_api_would_refuse_are_one_line_and_write_nothing(
    api: Api,
    settings_factory: Callable[..., Settings],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Each row is checked by the API's own rules: a bad value is one line naming the file,
    the row and the field, exit 1, nothing in the database. Zip bombs stop at the caps."""
    with trio.fail_after(CEILING):
        a, b, ws, _ = await populate(api)
        good = tmp_path / "good.zip"
        live = settings_factory()
        assert await run_cli("export", "--workspace", str(ws), str(good), *db_flags(live)) == 0
        zf = zipfile.ZipFile(good)
        manifest = json.loads(zf.read("manifest.json"))
        workspace = json.loads(zf.read("workspace.json"))
        msgs = [json.loads(line) for line in zf.read("messages.jsonl").splitlines()]
        by_seq = {(m["chat_id"], m["seq"]): m for m in msgs}
        chan = msgs[0]["chat_id"]
        first_reply, second_reply = by_seq[(chan, 2)], by_seq[(chan, 3)]
        assert second_reply["thread_id"] == by_seq[(chan, 1)]["id"]
        attachment = json.loads(zf.read("files.jsonl").splitlines()[0])

        def row_of(section: str, match: Callable[[dict[str, Any]], bool], **new: Any) -> bytes:
            return edit_rows(zf, section, lambda r: {**r, **new} if match(r) else r)

        def first_msg(m: dict[str, Any]) -> bool:
            return bool(m["id"] == msgs[0]["id"])

        without_bo = edit_rows(
            zf, "workspace_members", lambda r: None if r["user_id"] == b.id else r
        )
        counts = {
            **manifest["counts"],
            "workspace_members": manifest["counts"]["workspace_members"] - 1,
        }
        cases: dict[str, tuple[dict[str, bytes | None], str]] = {
            "long content": (
                {"messages.jsonl": row_of("messages", first_msg, content="x" * 100_000)},
                "messages.jsonl message {m0}: content: 100000 characters, over this server's"
                " max_content_chars (4000)",
            ),
            "bad time": (
                {"messages.jsonl": row_of("messages", first_msg, created_at="garbage")},
                "messages.jsonl message {m0}: created_at: must be an RFC 3339 time",
            ),
            "long workspace name": (
                {"workspace.json": json.dumps({**workspace, "name": "w" * 200}).encode()},
                "workspace.json: name: must be 1 to 128 characters",
            ),
            "empty email": (
                {"users.jsonl": row_of("users", lambda u: u["id"] == b.id, email="")},
                f"users.jsonl user {b.id}: email: must be an email address",
            ),
            "bad emoji": (
                {"reactions.jsonl": row_of("reactions", lambda r: True, emoji="not an emoji")},
                "emoji: must be one emoji or a :shortcode:",
            ),
            "nested thread": (
                {
                    "messages.jsonl": row_of(
                        "messages",
                        lambda m: m["id"] == second_reply["id"],
                        thread_id=first_reply["id"],
                    )
                },
                f"messages.jsonl message {second_reply['id']}: thread_id: must name an earlier"
                " top-level message of its chat",
            ),
            "second owner": (
                {
                    "workspace_members.jsonl": row_of(
                        "workspace_members", lambda m: m["user_id"] == b.id, role="owner"
                    )
                },
                f"workspace_members.jsonl user {b.id}: role: 'owner', but the owner is user {a.id}",
            ),
            "owner as member": (
                {
                    "workspace_members.jsonl": row_of(
                        "workspace_members", lambda m: m["user_id"] == a.id, role="member"
                    )
                },
                f"workspace_members.jsonl user {a.id}: role: 'member', but the owner is",
            ),
            "outsider in a chat": (
                {
                    "workspace_members.jsonl": without_bo,
                    "manifest.json": json.dumps({**manifest, "counts": counts}).encode(),
                },
                f"user {b.id}: user_id: not a member of the workspace",
            ),
            "header injection": (
                {
                    "files.jsonl": row_of(
                        "files",
                        lambda f: f["id"] == attachment["id"],
                        content_type="text/plain\r\nSet-Cookie: x=1",
                    )
                },
                f"files.jsonl file {attachment['id']}: content_type: must be a plain type/subtype",
            ),
            "huge integer": (
                {"members.jsonl": row_of("members", lambda m: True, last_read_seq=2**70)},
                "last_read_seq: must be an integer from 0 to 9223372036854775807",
            ),
            "manifest bomb": (
                {"manifest.json": json.dumps(manifest).encode() + b" " * (2 << 20)},
                "manifest.json: 2097",
            ),
            "blob bigger than declared": (
                {
                    "files.jsonl": row_of(
                        "files",
                        lambda f: f["id"] == attachment["id"],
                        size=attachment["size"] - 1,
                    )
                },
                f"files/{attachment['sha256']}: {attachment['size']} bytes where files.jsonl"
                f" declares {attachment['size'] - 1}",
            ),
        }
        zf.close()
        target = Settings(
            database_url=f"sqlite:///{tmp_path / 'target.db'}", files_dir=tmp_path / "tf"
        )
        capsys.readouterr()
        for name, (changes, expected) in cases.items():
            bad = tmp_path / "bad.zip"
            rewrite(good, bad, changes)
            assert await run_cli("import", str(bad), *db_flags(target)) == 1, name
            err = capsys.readouterr().err
            assert err.count("\n") == 1, (name, err)
            assert expected.format(m0=msgs[0]["id"]) in err, (name, err)
        async with open_storage(target.database_url) as storage:
            assert await storage.get_user_by_email(a.email) is None
            assert await storage.get_user_by_email(b.email) is None
        too_big = "99999999999999999999999"
        with pytest.raises(SystemExit) as exited:
            await run_cli("export", "--workspace", too_big, str(tmp_path / "x.zip"))
        assert exited.value.code == 2
        assert "--workspace: must be from 1 to 9223372036854775807" in capsys.readouterr().err
        assert not (tmp_path / "x.zip").exists()
        long_name = ("--workspace-name", "n" * 129, *db_flags(target))
        assert await run_cli("import", str(good), *long_name) == 1
        assert "--workspace-name: workspace name: must be 1 to 128" in capsys.readouterr().err


async def test_rows_other_rows_contradict_are_one_line_and_write_nothing(
    api: Api,
    settings_factory: Callable[..., Settings],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The cross-row rules: a Single chat has two people (members, senders and reactors
    together) and no name; a chat's owner is one of its members and of the workspace; a member
    is listed once; a time whose offset takes it out of years 1-9999 is refused, never an
    OverflowError out of the command."""
    with trio.fail_after(CEILING):
        a, b, ws, chan = await populate(api)
        c = await api.signup("cy")  # in the workspace, in neither chat
        r = await a.api.post(f"/api/workspaces/{ws}/members", json={"email": c.email})
        assert r.status_code == 201, r.text
        good = tmp_path / "good.zip"
        live = settings_factory()
        assert await run_cli("export", "--workspace", str(ws), str(good), *db_flags(live)) == 0
        zf = zipfile.ZipFile(good)
        manifest = json.loads(zf.read("manifest.json"))
        chats = {c["type"]: c for c in map(json.loads, zf.read("chats.jsonl").splitlines())}
        single = chats["Single"]["id"]
        msgs = [json.loads(line) for line in zf.read("messages.jsonl").splitlines()]
        direct = next(m for m in msgs if m["chat_id"] == single)
        reaction = json.loads(zf.read("reactions.jsonl").splitlines()[0])
        member = json.loads(zf.read("members.jsonl").splitlines()[0])

        def counted(**more: int) -> bytes:
            counts = {k: v + more.get(k, 0) for k, v in manifest["counts"].items()}
            return json.dumps({**manifest, "counts": counts}).encode()

        def plus(section: str, row: dict[str, Any]) -> bytes:
            return zf.read(f"{section}.jsonl") + json.dumps(row).encode() + b"\n"

        def row_of(section: str, match: Callable[[dict[str, Any]], bool], **new: Any) -> bytes:
            return edit_rows(zf, section, lambda r: {**r, **new} if match(r) else r)

        def created(at: str) -> bytes:
            return row_of("messages", lambda m: m["id"] == direct["id"], created_at=at)

        third = {**member, "chat_id": single, "user_id": c.id, "role": "member"}
        cases: dict[str, tuple[dict[str, bytes | None], str]] = {
            "third member of a Single": (
                {"members.jsonl": plus("members", third), "manifest.json": counted(members=1)},
                f"members.jsonl chat {single} user {c.id}: user_id: a third member of a Single",
            ),
            "Single sender outside the pair": (
                {
                    "messages.jsonl": row_of(
                        "messages", lambda m: m["id"] == direct["id"], sender_id=c.id
                    )
                },
                f"messages.jsonl message {direct['id']}: sender_id: user {c.id} is not one of"
                f" the Single chat's two people ({min(a.id, b.id)}, {max(a.id, b.id)})",
            ),
            "Single reactor outside the pair": (
                {
                    "reactions.jsonl": plus(
                        "reactions", {**reaction, "message_id": direct["id"], "user_id": c.id}
                    ),
                    "manifest.json": counted(reactions=1),
                },
                f"reactions.jsonl message {direct['id']} user {c.id}: user_id: user {c.id} is"
                " not one of the Single chat's two people",
            ),
            "named Single": (
                {"chats.jsonl": row_of("chats", lambda ch: ch["id"] == single, name="dm")},
                f"chats.jsonl chat {single}: name: must be null: a Single chat has no name",
            ),
            "owner not in the chat": (
                {
                    "members.jsonl": edit_rows(
                        zf,
                        "members",
                        lambda m: None if (m["chat_id"], m["user_id"]) == (chan, a.id) else m,
                    ),
                    "manifest.json": counted(members=-1),
                },
                f"chats.jsonl chat {chan}: owner_id: user {a.id} is not a member of the chat",
            ),
            "owner outside the workspace": (
                {
                    "chats.jsonl": row_of("chats", lambda ch: ch["id"] == chan, owner_id=99),
                    "users.jsonl": plus(
                        "users",
                        {
                            "id": 99,
                            "fullname": "Gone",
                            "email": "gone@example.com",
                            "avatar": None,
                            "status": "Active",
                            "created_at": "2024-01-01T00:00:00Z",
                        },
                    ),
                    "manifest.json": counted(users=1),
                },
                f"chats.jsonl chat {chan}: owner_id: user 99 is not a member of the workspace",
            ),
            "member listed twice": (
                {
                    "members.jsonl": plus("members", member),
                    "manifest.json": counted(members=1),
                },
                f"members.jsonl chat {member['chat_id']} user {member['user_id']}: user_id:"
                " listed twice",
            ),
            "year 0 in UTC": (
                {"messages.jsonl": created("0001-01-01T00:00:00+01:00")},
                f"messages.jsonl message {direct['id']}: created_at: must be an RFC 3339 time",
            ),
            "year 10000 in UTC": (
                {"messages.jsonl": created("9999-12-31T23:59:59-01:00")},
                f"messages.jsonl message {direct['id']}: created_at: must be an RFC 3339 time",
            ),
        }
        # The edge of the range is a time like any other.
        edge_rows = created("0001-01-01T00:00:00-01:00")
        zf.close()
        target = Settings(
            database_url=f"sqlite:///{tmp_path / 'target.db'}", files_dir=tmp_path / "tf"
        )
        capsys.readouterr()
        for name, (changes, expected) in cases.items():
            bad = tmp_path / "bad.zip"
            rewrite(good, bad, changes)
            assert await run_cli("import", str(bad), *db_flags(target)) == 1, name
            err = capsys.readouterr().err
            assert err.count("\n") == 1, (name, err)
            assert expected in err, (name, err)
        async with open_storage(target.database_url) as storage:
            assert await storage.get_user_by_email(a.email) is None
        # The edge of the range is a time like any other, stored with a four-digit year.
        edge = tmp_path / "edge.zip"
        rewrite(good, edge, {"messages.jsonl": edge_rows})
        assert await run_cli("import", str(edge), *db_flags(target)) == 0
        async with open_storage(target.database_url) as storage:
            ana = await storage.get_user_by_email(a.email)
            assert ana is not None
            (copy,) = await storage.list_workspaces(ana.id)
            chats_now = await storage.list_chats(ana.id, copy.id)
            dm = next(ch for ch in chats_now if ch.record.name is None)
            page = await storage.list_messages(dm.id, limit=10, before=None, after=0)
        assert [m.created_at for m in page.items] == ["0001-01-01T01:00:00.000000Z"]


async def test_former_members_history_is_imported(
    api: Api,
    settings_factory: Callable[..., Settings],
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    """What the server keeps when people leave imports as it is: a channel with messages and
    reactions of someone who left it, and a Single chat whose other person left the workspace
    (one member left; the departed one's messages and reactions stay theirs)."""
    with trio.fail_after(CEILING):
        a, b, ws, chan = await populate(api)
        c = await api.signup("cy")
        r = await a.api.post(f"/api/workspaces/{ws}/members", json={"email": c.email})
        assert r.status_code == 201, r.text
        r = await a.api.post(f"/api/chats/{chan}/members", json={"user_ids": [c.id]})
        assert r.status_code == 201, r.text
        r = await c.api.post(f"/api/chats/{chan}/messages", json={"content": "bye all"})
        assert r.status_code == 201, r.text
        bye = r.json()["id"]
        assert (await c.api.put(f"/api/chats/{chan}/messages/{bye}/reactions/:wave:")).is_success
        assert (await c.api.delete(f"/api/chats/{chan}/members/{c.id}")).status_code == 204
        single = await make_chat(b, ws, "Single", a)  # the pair's chat of populate()
        r = await b.api.post(f"/api/chats/{single}/messages", json={"content": "leaving"})
        assert r.status_code == 201, r.text
        left = r.json()["id"]
        assert (await b.api.put(f"/api/chats/{single}/messages/{left}/reactions/:wave:")).is_success
        assert (await b.api.delete(f"/api/workspaces/{ws}/members/{b.id}")).status_code == 204
        live = settings_factory()
        archive = tmp_path / "ws.zip"
        assert await run_cli("export", "--workspace", str(ws), str(archive), *db_flags(live)) == 0
        fresh = fresh_database(tmp_path, request, "fresh")
        assert await run_cli("import", str(archive), *db_flags(fresh)) == 0
        copy = await history(fresh, a.email)
        assert copy == await history(live, a.email, ws)
        members, messages = copy["Single:None"]
        assert members == [a.email]
        assert [(m[0], m[1], len(m[2])) for m in messages[-1:]] == [(b.email, "leaving", 1)]
        members, messages = copy["PublicChannel:general"]
        assert c.email not in members
        assert [(m[0], m[1], len(m[2])) for m in messages[-1:]] == [(c.email, "bye all", 1)]


async def history(settings: Settings, email: str, ws_id: int | None = None) -> dict[str, Any]:
    """Per chat ``email`` is in (of ``ws_id``, else of their one workspace): its members and
    its messages as (sender, content, reactions), everyone by email, members or not."""
    async with open_storage(settings.database_url) as storage:
        me = await storage.get_user_by_email(email)
        assert me is not None
        if ws_id is None:
            (ws,) = await storage.list_workspaces(me.id)
            ws_id = ws.id
        out: dict[str, Any] = {}
        for chat in await storage.list_chats(me.id, ws_id):
            page = await storage.list_messages(chat.id, limit=200, before=None, after=0)
            members = [m.user_id for m in await storage.list_chat_members(chat.id)]
            people = await storage.get_users(
                [*members, *(m.sender_id for m in page.items)]
                + [u for m in page.items for r in m.reactions for u in r.user_ids]
            )
            out[f"{chat.record.type.value}:{chat.record.name}"] = (
                sorted(people[u].email for u in members),
                [
                    (
                        people[m.sender_id].email,
                        m.content,
                        [(r.emoji, [people[u].email for u in r.user_ids]) for r in m.reactions],
                    )
                    for m in sorted(page.items, key=lambda m: m.seq)
                ],
            )
        return out
