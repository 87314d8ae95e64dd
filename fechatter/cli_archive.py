"""``fechatter export`` and ``fechatter import``: workspace archives (issue 17, docs/archive.md).

Both run on the database and the files directory directly, as the operator: whoever can run
them can read the database anyway, so they check no account ("admin-only" is operator
access). A failure is one line on stderr and exit status 1 (2 for bad configuration);
nothing is half-imported (one transaction).
"""

from __future__ import annotations

import argparse
import math
import sys
import zipfile
from pathlib import Path

import trio

from fechatter import cli_errors
from fechatter.config import Settings
from fechatter.domain.archive import (
    BlobCollected,
    export_workspace,
    import_archive,
    import_source,
)
from fechatter.domain.archive_check import ImportLimits
from fechatter.domain.slack_import import MAX_SLACK_TOTAL, SlackSource
from fechatter.errors import FechatterError, Unavailable
from fechatter.schemas import MAX_ID
from fechatter.storage import open_storage
from fechatter.storage.archive import ArchiveInvalid, ArchiveStore, ImportResult
from fechatter.storage.blobs import BlobMissing, LocalBlobStore
from fechatter.storage.core import SqlStorage

COMMANDS = ("export", "import")
# One import is one transaction: PostgreSQL's per-call bound is raised to this (seconds).
IMPORT_TIMEOUT = 3600.0
# An export reads from one snapshot, which holds the database back while open (SQLite: no
# checkpoint past it; PostgreSQL: an old xmin): it may stay open this long by default
# (seconds; --snapshot-limit): generous for reading a big workspace's rows (the blobs are
# copied after the snapshot ends), and a bound on an export left hanging.
EXPORT_SNAPSHOT_LIMIT = 3600.0
MAX_SNAPSHOT_LIMIT = 7 * 24 * 3600.0


def _workspace_id(text: str) -> int:
    """An id as the API takes it: an integer from 1 to 2^63-1 (argparse reports the error)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if not 1 <= value <= MAX_ID:
        raise argparse.ArgumentTypeError(f"must be from 1 to {MAX_ID}")
    return value


def _seconds(text: str) -> float:
    """A duration in seconds, more than 0 and at most a week (argparse reports the error)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 < value <= MAX_SNAPSHOT_LIMIT:
        raise argparse.ArgumentTypeError(f"must be over 0 and at most {MAX_SNAPSHOT_LIMIT:g}")
    return value


def _mebibytes(text: str) -> int:
    """A size in MiB from 1 to 2^20 (1 TiB), as bytes (argparse reports the error)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if not 1 <= value <= 1 << 20:
        raise argparse.ArgumentTypeError("must be from 1 to 1048576 (MiB)")
    return value * 1024 * 1024


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``export`` and ``import`` to the ``fechatter`` command's subparsers."""
    export = sub.add_parser("export", help="write a workspace archive (docs/archive.md)")
    export.add_argument("--workspace", type=_workspace_id, required=True, help="the workspace id")
    export.add_argument("file", help="the zip file to write")
    export.add_argument(
        "--snapshot-limit",
        type=_seconds,
        default=EXPORT_SNAPSHOT_LIMIT,
        metavar="SECONDS",
        help="the longest the export may hold its one database snapshot open (default"
        f" {EXPORT_SNAPSHOT_LIMIT:g}); past it the export fails and writes nothing",
    )
    imp = sub.add_parser("import", help="import an archive or a Slack export as a new workspace")
    imp.add_argument("file", help="a Fechatter archive zip (or, with --slack, a Slack export)")
    imp.add_argument("--slack", action="store_true", help="FILE is a Slack workspace export zip")
    imp.add_argument(
        "--slack-json-budget",
        type=_mebibytes,
        default=MAX_SLACK_TOTAL,
        metavar="MIB",
        help=f"with --slack: the most JSON read in all, inflated (default"
        f" {MAX_SLACK_TOTAL >> 20} MiB)",
    )
    imp.add_argument(
        "--workspace-name", help="name of the new workspace (default: the archive's / the zip's)"
    )
    for p in (export, imp):
        p.add_argument("--config", help="YAML config file (default ./app.yaml if present)")
        p.add_argument("--database-url", help="sqlite:///path (default sqlite:///fechatter.db)")
        p.add_argument("--files-dir", help="where blobs live (default: the server's files_dir)")


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Run ``export`` or ``import`` for parsed ``args`` with ``settings`` (loaded by
    ``fechatter.cli``'s shared loader, ``--files-dir`` included); the exit status: 0, or 1
    with one line on stderr."""
    try:
        if args.command == "export":
            # Opening a missing SQLite file would create an empty database, and the export
            # would then say "no workspace": a mistyped path is said as such (as ``admin``).
            missing = cli_errors.missing_sqlite_file(settings)
            if missing is not None:
                print(f"fechatter export: {missing}", file=sys.stderr)
                return 1
            counts = trio.run(
                _export, settings, args.workspace, Path(args.file), args.snapshot_limit
            )
            print(f"exported workspace {args.workspace} to {args.file}: {counts}")
        else:
            result = trio.run(
                _import,
                settings,
                Path(args.file),
                args.slack,
                args.workspace_name,
                args.slack_json_budget,
            )
            print(
                f"imported {args.file} as workspace {result.workspace_id}:"
                f" {result.users_created} users created (pending: a reset link or an"
                " email-bound invite activates each),"
                f" {result.users_matched} matched by email, {result.chats} chats,"
                f" {result.messages} messages, {result.reactions} reactions,"
                f" {result.files} files"
            )
    except (ArchiveInvalid, BlobCollected) as exc:
        print(f"fechatter {args.command}: {exc}", file=sys.stderr)
        return 1
    except Unavailable as exc:
        # "cannot connect" (or "cannot open the SQLite database") only for a failed open;
        # a failure once open (the snapshot ended, its limit, a timeout) says what it was.
        line = cli_errors.database_error(exc, settings.database_url)
        print(f"fechatter {args.command}: {line}", file=sys.stderr)
        return 1
    except (FechatterError, BlobMissing, OSError) as exc:
        print(f"fechatter {args.command}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0


async def _store(
    settings: Settings, storage: object, snapshot_limit: float = math.inf
) -> tuple[ArchiveStore, LocalBlobStore]:
    if not isinstance(storage, SqlStorage):  # pragma: no cover - both backends are
        raise TypeError("archives need a SQL storage backend")
    blobs = LocalBlobStore(settings.files_path)
    await blobs.open()
    return ArchiveStore(storage, snapshot_limit=snapshot_limit), blobs


async def _export(
    settings: Settings, workspace_id: int, path: Path, snapshot_limit: float
) -> dict[str, int]:
    async with open_storage(settings.database_url, pool_size=2) as storage:
        store, blobs = await _store(settings, storage, snapshot_limit)
        return (await export_workspace(store, blobs, workspace_id, path)).counts


async def _import(
    settings: Settings, path: Path, slack: bool, name: str | None, json_budget: int
) -> ImportResult:
    async with open_storage(
        settings.database_url, pool_size=2, operation_timeout=IMPORT_TIMEOUT
    ) as storage:
        store, blobs = await _store(settings, storage)
        limits = ImportLimits.of(settings)
        if not slack:
            return await import_archive(store, blobs, path, name, limits)
        try:
            zf = zipfile.ZipFile(path)
        except (zipfile.BadZipFile, OSError) as exc:
            raise ArchiveInvalid(f"{path}: not a zip archive ({exc})") from None
        with (
            zf,
            SlackSource(
                zf, name or path.stem, limits.max_content_chars, max_total_bytes=json_budget
            ) as source,
        ):
            return await import_source(store, source, None, limits)
