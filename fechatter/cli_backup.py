"""``fechatter backup FILE`` / ``fechatter restore FILE``: a whole SQLite server in one archive.

The archive is a plain tar (blobs are often compressed already):

- ``fechatter.db`` — the database as of one commit (``storage.backup.snapshot``: SQLite's
  online backup API, taken while the server writes);
- ``files/blobs/<2 hex>/<64 hex>`` — every blob of the files directory, copied *after* the
  snapshot, so every blob the snapshot refers to was there when it was taken (one deleted by
  the collector in between is missing: only one whose file row the server deleted after the
  snapshot); upload temporaries (``files/tmp``) are left out;
- ``manifest.json`` — ``{"format": "fechatter-backup", "format_version": 1, "backend":
  "sqlite", "created_at", "schema_versions": [...], "blobs": N}``, written last.

``restore`` refuses a target that holds a database or blobs unless ``--force`` (which
replaces both), a database another process has open (a running server: "stop it first"), and
an archive whose schema is newer than this build's migrations (an older one is migrated on the
next start). It stages the database and the blobs next to their targets and swaps them in
(blobs, then the database), so a failure part-way leaves the old state. The archive and
everything restored are owner-only (files 0600, directories 0700), like the live files. PostgreSQL:
``pg_dump`` / ``pg_restore`` (docs/deploy.md "Backups"); these commands say so and exit 1.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import secrets
import shutil
import sqlite3
import sys
import tarfile
from pathlib import Path
from typing import Any

from fechatter.cli_admin import CommandError, common_options
from fechatter.config import Settings
from fechatter.models import utc_now
from fechatter.storage import backup

FORMAT = "fechatter-backup"
FORMAT_VERSION = 1
DATABASE = "fechatter.db"
MANIFEST = "manifest.json"
BLOB = re.compile(r"^files/blobs/([0-9a-f]{2})/(\1[0-9a-f]{62})$")
LOCK_TIMEOUT = 0.5  # seconds to wait for the target database to be free before refusing
PG_HINT = "PostgreSQL is backed up with pg_dump / pg_restore: see docs/deploy.md 'Backups'"


def register(sub: Any) -> None:
    """Add ``backup`` and ``restore`` to ``sub`` (the top-level subparsers)."""
    common = common_options()
    p = sub.add_parser("backup", help="write a backup archive of a SQLite server", parents=[common])
    p.add_argument("file", help="the archive to write (a tar)")
    p = sub.add_parser(
        "restore", help="restore a backup archive into an empty target", parents=[common]
    )
    p.add_argument("file", help="the archive to read")
    p.add_argument("--force", action="store_true", help="replace a non-empty target")


def _sqlite(settings: Settings) -> Path:
    path = settings.sqlite_path
    if path is None:
        raise CommandError(PG_HINT)
    return path


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _private_file(path: Path) -> None:
    """Create ``path`` empty with mode 0600 (``FileExistsError`` if it exists)."""
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))


def write_backup(settings: Settings, file: Path) -> dict[str, Any]:
    """Write the archive ``file`` (atomically: a partial file is never left under that
    name); returns its manifest."""
    source = _sqlite(settings)
    if not source.is_file():
        raise CommandError(f"no database at {source} (--database-url / --config)")
    file.parent.mkdir(parents=True, exist_ok=True)
    work = file.parent / f".{file.name}.{secrets.token_hex(6)}"
    snapshot = Path(f"{work}.db")
    try:
        # Owner-only from the first byte, like the live database and files (0600).
        _private_file(snapshot)
        _private_file(work)
        versions = backup.snapshot(source, snapshot)
        blobs = 0
        with tarfile.open(work, "w") as tar:
            tar.add(snapshot, DATABASE)
            root = settings.files_path / "blobs"
            for shard in sorted(root.iterdir()) if root.is_dir() else []:
                for blob in sorted(shard.iterdir()):
                    name = f"files/blobs/{shard.name}/{blob.name}"
                    if BLOB.match(name) is None:
                        continue
                    try:
                        tar.add(blob, name)
                    except FileNotFoundError:  # collected since listed
                        continue
                    blobs += 1
            manifest = {
                "format": FORMAT,
                "format_version": FORMAT_VERSION,
                "backend": "sqlite",
                "created_at": utc_now(),
                "schema_versions": versions,
                "blobs": blobs,
            }
            data = json.dumps(manifest, indent=2).encode()
            info = tarfile.TarInfo(MANIFEST)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        with open(work, "rb") as f:
            os.fsync(f.fileno())
        os.replace(work, file)
        _fsync_dir(file.parent)
    finally:
        snapshot.unlink(missing_ok=True)
        work.unlink(missing_ok=True)
    return manifest


def _manifest(tar: tarfile.TarFile) -> dict[str, Any]:
    try:
        member = tar.getmember(MANIFEST)
        raw = tar.extractfile(member)
        manifest = json.loads(raw.read()) if raw is not None else None
    except (KeyError, ValueError):
        manifest = None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise CommandError("not a fechatter backup archive (no manifest.json)")
    if manifest.get("format_version") != FORMAT_VERSION or manifest.get("backend") != "sqlite":
        raise CommandError(
            f"unsupported archive: format_version {manifest.get('format_version')!r},"
            f" backend {manifest.get('backend')!r}"
        )
    versions = manifest.get("schema_versions")
    if not isinstance(versions, list) or not all(isinstance(v, int) for v in versions):
        raise CommandError("bad manifest: schema_versions")
    unknown = sorted(set(versions) - set(backup.known_versions()))
    if unknown:
        raise CommandError(
            f"the archive's schema is newer than this fechatter (unknown migrations {unknown});"
            " restore it with a newer version"
        )
    return manifest


def _lock_target(target: Path) -> sqlite3.Connection | None:
    """Exclusive use of the database at ``target`` for the restore (None: no file there).

    A running server keeps connections open in WAL mode; leaving WAL mode needs every other
    connection closed, so it is the test (``BEGIN EXCLUSIVE`` alone succeeds against an idle
    WAL server). Then ``BEGIN EXCLUSIVE`` keeps a server that starts meanwhile waiting.
    ``CommandError`` when another process has it open."""
    if not target.exists():
        return None
    busy = CommandError(f"a server is using {target}; stop it first")
    conn = sqlite3.connect(target, timeout=LOCK_TIMEOUT, isolation_level=None)
    try:
        mode = conn.execute("PRAGMA journal_mode=DELETE").fetchone()
        if mode is None or str(mode[0]).lower() != "delete":
            raise busy
        conn.execute("BEGIN EXCLUSIVE")
    except sqlite3.OperationalError:
        conn.close()
        raise busy from None
    except BaseException:
        conn.close()
        raise
    return conn


def _stage_database(tar: tarfile.TarFile, staged: Path, manifest: dict[str, Any]) -> None:
    source = tar.extractfile(DATABASE)
    if source is None:
        raise CommandError(f"the archive holds no {DATABASE}")
    _private_file(staged)
    with open(staged, "wb") as out:
        shutil.copyfileobj(source, out)
        out.flush()
        os.fsync(out.fileno())
    if backup.versions_of(staged) != manifest["schema_versions"]:
        raise CommandError("the archive's database does not match its manifest")


def _stage_blobs(tar: tarfile.TarFile, staged: Path) -> None:
    staged.mkdir(mode=0o700)
    for member in tar.getmembers():
        match = BLOB.match(member.name)
        blob = tar.extractfile(member) if member.isfile() and match else None
        if match is None or blob is None:
            continue  # names are checked: nothing lands outside the blobs directory
        shard = staged / match.group(1)
        shard.mkdir(mode=0o700, exist_ok=True)
        _private_file(shard / match.group(2))
        with open(shard / match.group(2), "wb") as out:
            shutil.copyfileobj(blob, out)


def restore_backup(settings: Settings, file: Path, *, force: bool) -> dict[str, Any]:
    """Restore the archive ``file`` into the configured database and files directory;
    returns its manifest. ``CommandError`` for a non-empty target without ``force``, a
    target a server has open, a bad, truncated or too-new archive.

    Everything is staged next to its target first (the database file, a blobs directory),
    then swapped in by renames — blobs, then the database — so a failure before the swap
    leaves the old state whole. The restored files are 0600, directories 0700."""
    target = _sqlite(settings)
    blobs_dir = settings.files_path / "blobs"
    try:
        tar = tarfile.open(file, "r:")  # noqa: SIM115 - closed by the with below
    except tarfile.TarError:
        raise CommandError(f"cannot read {file}: not a tar archive") from None
    except OSError as exc:
        raise CommandError(f"cannot read {file}: {exc.strerror or exc}") from None
    tag = secrets.token_hex(6)
    staged = target.parent / f".{target.name}.restore-{tag}"
    staged_blobs = blobs_dir.parent / f".blobs.restore-{tag}"
    old_blobs = blobs_dir.parent / f".blobs.old-{tag}"
    lock: sqlite3.Connection | None = None
    try:
        with tar:
            manifest = _manifest(tar)
            has_blobs = blobs_dir.is_dir() and any(blobs_dir.iterdir())
            empty = backup.is_empty(target) and not has_blobs  # read before the lock
            # A running server first: "--force" would not help with it.
            lock = _lock_target(target)
            if not force and not empty:
                raise CommandError(
                    f"the target is not empty ({target}, {blobs_dir}); --force replaces it"
                )
            target.parent.mkdir(parents=True, exist_ok=True)
            blobs_dir.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            try:
                _stage_database(tar, staged, manifest)
            except (KeyError, sqlite3.Error) as exc:
                raise CommandError(f"the archive's database is unreadable: {exc}") from None
            _stage_blobs(tar, staged_blobs)
        # The swap: blobs first, then the database; a failed database swap puts the old
        # blobs back.
        if blobs_dir.exists():
            blobs_dir.rename(old_blobs)
        staged_blobs.rename(blobs_dir)
        try:
            for suffix in ("-wal", "-shm", "-journal"):
                Path(f"{target}{suffix}").unlink(missing_ok=True)
            os.replace(staged, target)
        except BaseException:
            shutil.rmtree(blobs_dir, ignore_errors=True)
            if old_blobs.exists():
                old_blobs.rename(blobs_dir)
            raise
        _fsync_dir(target.parent)
        _fsync_dir(blobs_dir.parent)
    except tarfile.TarError as exc:
        raise CommandError(f"cannot read {file}: a damaged or truncated archive ({exc})") from None
    finally:
        if lock is not None:
            lock.close()
        staged.unlink(missing_ok=True)
        shutil.rmtree(staged_blobs, ignore_errors=True)
        shutil.rmtree(old_blobs, ignore_errors=True)
    return manifest


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Run ``fechatter backup`` or ``fechatter restore``: 0, or 1 with one line on stderr."""
    file = Path(args.file)
    try:
        if args.command == "backup":
            manifest = write_backup(settings, file)
            print(
                f"backup written to {file}: schema {max(manifest['schema_versions'], default=0)},"
                f" {manifest['blobs']} blobs"
            )
        else:
            manifest = restore_backup(settings, file, force=args.force)
            print(
                f"restored {file} into {settings.database_url}:"
                f" schema {max(manifest['schema_versions'], default=0)}, {manifest['blobs']} blobs"
            )
    except (CommandError, sqlite3.Error, OSError) as exc:
        print(f"fechatter {args.command}: {exc}", file=sys.stderr)
        return 1
    return 0
