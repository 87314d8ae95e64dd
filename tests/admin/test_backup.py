"""``fechatter backup`` / ``fechatter restore`` (issue 17): a round trip under load, and the
refusals. SQLite only: PostgreSQL is backed up with pg_dump (the recipe of docs/deploy.md
"Backups", run by tests/deploy/test_nginx.py)."""

from __future__ import annotations

import io
import json
import sqlite3
import tarfile
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
import trio

from fechatter.config import Settings
from fechatter.storage.backup import known_versions
from tests.admin.cli import fechatter, one_line_refusal
from tests.conftest import (
    Api,
    api_client,
    make_chat,
    make_workspace,
    running_server,
    suite_backend,
    upload_file,
)

pytestmark = pytest.mark.skipif(
    suite_backend() not in ("sqlite", "proxy"),
    reason="fechatter backup is for SQLite; PostgreSQL uses pg_dump (tests/deploy/test_nginx.py)",
)

LOAD_CEILING = 120.0  # seconds for the whole round trip (two interpreters start)
BEFORE_BACKUP = 20  # messages sent before the backup starts
AFTER_BACKUP = 10  # messages sent after it returned


async def test_round_trip_under_load(
    nursery: trio.Nursery,
    settings_factory: Callable[..., Settings],
    tmp_path: Path,
) -> None:
    settings = settings_factory(send_burst=100_000, send_rate=100_000.0)  # load, not limits
    archive = tmp_path / "backups" / "one.tar"
    with trio.fail_after(LOAD_CEILING):
        async with running_server(nursery, settings) as info, api_client(info) as api:
            a, b = await api.signup(), await api.signup()
            ws = await make_workspace(a, b)
            single = await make_chat(a, ws, "Single", b)
            channel = await make_chat(a, ws, "PublicChannel", b, name="load")
            file_url = await upload_file(a, b"backed-up bytes", "kept.txt")
            r = await a.api.post(
                f"/api/chats/{channel}/messages",
                json={"content": "with a file", "files": [file_url], "client_id": "f"},
            )
            assert r.status_code in (200, 201), r.text
            sent: dict[str, str] = {"f": "with a file"}  # client_id -> content
            enough = trio.Event()
            stop = trio.Event()

            async def writer() -> None:
                n = 0
                while not stop.is_set():
                    n += 1
                    chat, who = (single, a) if n % 2 else (channel, b)
                    cid, content = f"w{n}", f"message {n} to {chat}"
                    r = await who.api.post(
                        f"/api/chats/{chat}/messages", json={"content": content, "client_id": cid}
                    )
                    assert r.status_code in (200, 201), r.text
                    sent[cid] = content
                    if n == BEFORE_BACKUP:
                        enough.set()
                    if done_backup.is_set():
                        after[0] += 1
                        if after[0] == AFTER_BACKUP:
                            stop.set()

            done_backup = trio.Event()
            after = [0]  # messages sent once the backup returned
            async with trio.open_nursery() as load:
                load.start_soon(writer)
                await enough.wait()
                done = await fechatter(
                    "backup",
                    str(archive),
                    "--database-url",
                    settings.database_url,
                    files_dir=settings.files_path,
                )
                assert done.returncode == 0, done.stderr.decode()
                done_backup.set()
            live_counts = {c: await count(a.api, c) for c in (single, channel)}

    with tarfile.open(archive) as tar:
        manifest = json.loads(tar.extractfile("manifest.json").read())  # type: ignore[union-attr]
    assert manifest["schema_versions"] == known_versions()
    assert manifest["blobs"] == 1

    restored = tmp_path / "restored"
    restored_settings = settings.model_copy(
        update={"database_url": f"sqlite:///{restored / 'db.sqlite'}", "files_dir": restored / "f"}
    )
    done = await fechatter(
        "restore",
        str(archive),
        "--database-url",
        restored_settings.database_url,
        files_dir=restored / "f",
    )
    assert done.returncode == 0, done.stderr.decode()
    with closing(sqlite3.connect(restored / "db.sqlite")) as conn:
        versions = [v for (v,) in conn.execute("SELECT version FROM schema_migrations ORDER BY 1")]
    assert versions == known_versions()

    with trio.fail_after(LOAD_CEILING):
        async with running_server(nursery, restored_settings) as info, api_client(info) as fresh:
            # Same secret, same users: the old tokens still stand on the restored server.
            a_api = Api(fresh.client, a.api.token)
            total = 0
            for chat in (single, channel):
                items = await all_messages(a_api, chat)
                seqs = [m["seq"] for m in items]
                assert seqs == list(range(1, len(seqs) + 1)), f"chat {chat}: gaps {seqs}"
                for m in items:
                    assert m["content"] == sent[m["client_id"]]
                assert len(items) <= live_counts[chat]
                total += len(items)
            # Taken mid-load: more than was sent before, less than was sent in all.
            assert 1 + BEFORE_BACKUP <= total < sum(live_counts.values())
            r = await a_api.get(f"/api/workspaces/{ws}/members")
            assert sorted(m["user"]["id"] for m in r.json()) == sorted([a.id, b.id])
            r = await a_api.get(file_url)
            assert (r.status_code, r.content) == (200, b"backed-up bytes")
            assert await sign_in_status(fresh, a.email) == 200


async def count(api: Api, chat: int) -> int:
    return len(await all_messages(api, chat))


async def all_messages(api: Api, chat: int) -> list[dict[str, Any]]:
    """Every message of the chat by seq (pages of 100, newest backwards)."""
    items: list[dict[str, Any]] = []
    params: dict[str, int] = {"limit": 100}
    while True:
        r = await api.get(f"/api/chats/{chat}/messages", params=params)
        assert r.status_code == 200, r.text
        page = r.json()
        items += page["items"]
        if not page["has_more"]:
            return sorted(items, key=lambda m: int(m["seq"]))
        params["before"] = min(int(m["id"]) for m in page["items"])


async def sign_in_status(api: Api, email: str) -> int:
    r = await api.post("/api/auth/signin", json={"email": email, "password": "correct horse"})
    return r.status_code


async def test_restore_refuses_a_non_empty_target_and_bad_archives(tmp_path: Path) -> None:
    source = f"sqlite:///{tmp_path / 'a.db'}"
    done = await fechatter("migrate", "--database-url", source)
    assert done.returncode == 0, done.stderr.decode()
    archive = tmp_path / "a.tar"
    done = await fechatter("backup", str(archive), "--database-url", source)
    assert done.returncode == 0, done.stderr.decode()
    # The source itself is not empty: refused, and nothing was touched.
    done = await fechatter("restore", str(archive), "--database-url", source)
    one_line_refusal(done, "fechatter restore: the target is not empty")
    done = await fechatter("restore", str(archive), "--database-url", source, "--force")
    assert done.returncode == 0, done.stderr.decode()
    # Not an archive; an archive from a newer fechatter.
    junk = tmp_path / "junk.tar"
    junk.write_bytes(b"not a tar")
    target = f"sqlite:///{tmp_path / 'b.db'}"
    done = await fechatter("restore", str(junk), "--database-url", target)
    one_line_refusal(done, "fechatter restore: cannot read")
    newer = tmp_path / "newer.tar"
    with tarfile.open(archive) as src, tarfile.open(newer, "w") as dst:
        for member in src.getmembers():
            data = src.extractfile(member)
            if member.name == "manifest.json":
                assert data is not None
                manifest = json.loads(data.read())
                manifest["schema_versions"].append(9999)
                raw = json.dumps(manifest).encode()
                member.size = len(raw)
                dst.addfile(member, io.BytesIO(raw))
            else:
                dst.addfile(member, data)
    done = await fechatter("restore", str(newer), "--database-url", target)
    line = one_line_refusal(done, "fechatter restore: the archive's schema is newer")
    assert "9999" in line
    assert not (tmp_path / "b.db").exists()
    # A missing source database, and PostgreSQL.
    done = await fechatter("backup", str(tmp_path / "x.tar"), "--database-url", target)
    one_line_refusal(done, "fechatter backup: no database at")
    done = await fechatter(
        "backup", str(tmp_path / "x.tar"), "--database-url", "postgresql://127.0.0.1:1/x"
    )
    one_line_refusal(done, "fechatter backup: PostgreSQL is backed up with pg_dump")


async def test_a_truncated_archive_is_one_line(tmp_path: Path) -> None:
    source = f"sqlite:///{tmp_path / 'a.db'}"
    assert (await fechatter("migrate", "--database-url", source)).returncode == 0
    archive = tmp_path / "a.tar"
    done = await fechatter("backup", str(archive), "--database-url", source)
    assert done.returncode == 0, done.stderr.decode()
    whole = archive.read_bytes()
    truncated = tmp_path / "cut.tar"
    truncated.write_bytes(whole[: len(whole) // 2])
    done = await fechatter(
        "restore", str(truncated), "--database-url", f"sqlite:///{tmp_path / 'b.db'}"
    )
    one_line_refusal(done, "fechatter restore: cannot read")
    assert not (tmp_path / "b.db").exists()


def mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


async def test_restore_refuses_a_live_server_and_everything_is_owner_only(
    nursery: trio.Nursery, settings_factory: Callable[..., Settings], tmp_path: Path
) -> None:
    """``restore --force`` onto the database a server has open is refused and changes
    nothing; once the server stopped it restores; archive and restored files are 0600,
    directories 0700."""
    settings = settings_factory()
    archive = tmp_path / "backups" / "one.tar"
    flags = ["--database-url", settings.database_url]
    with trio.fail_after(LOAD_CEILING):
        async with running_server(nursery, settings) as info, api_client(info) as api:
            a = await api.signup()
            file_url = await upload_file(a, b"owner-only bytes", "kept.txt")
            done = await fechatter("backup", str(archive), *flags, files_dir=settings.files_path)
            assert done.returncode == 0, done.stderr.decode()
            later = await api.signup()  # after the backup: lost if a restore went through
            for force in ([], ["--force"]):  # the server is named first, not --force
                done = await fechatter(
                    "restore", str(archive), *flags, *force, files_dir=settings.files_path
                )
                line = one_line_refusal(done, "fechatter restore: a server is using ")
                assert line.endswith("stop it first")
            assert await sign_in_status(api, later.email) == 200
            r = await a.api.get(file_url)
            assert (r.status_code, r.content) == (200, b"owner-only bytes")
    assert mode(archive) == 0o600
    # The server stopped: the restore goes through (the later user is gone, the file is back).
    done = await fechatter(
        "restore", str(archive), *flags, "--force", files_dir=settings.files_path
    )
    assert done.returncode == 0, done.stderr.decode()
    db = settings.sqlite_path
    assert db is not None
    assert mode(db) == 0o600
    blobs = settings.files_path / "blobs"
    assert mode(blobs) == 0o700
    shards = list(blobs.iterdir())
    assert len(shards) == 1
    assert mode(shards[0]) == 0o700
    [blob] = list(shards[0].iterdir())
    assert mode(blob) == 0o600
    assert blob.read_bytes() == b"owner-only bytes"
    leftovers = [p.name for p in settings.files_path.iterdir() if p.name.startswith(".")]
    assert leftovers == []
    with trio.fail_after(LOAD_CEILING):
        async with running_server(nursery, settings) as info, api_client(info) as api:
            assert await sign_in_status(api, a.email) == 200
            assert await sign_in_status(api, later.email) == 401
