"""Workspace export and import (issue 17): the archive format of docs/archive.md.

``export_workspace`` writes one workspace as a zip: ``manifest.json``, ``workspace.json``, one
JSON-lines file per kind of row and ``files/<sha256>`` for each blob. It streams: rows are
read in batches and written line by line; what it keeps in memory is the sets of user ids and
file URLs the rows reference (to export exactly those users and uploads).

``import_archive`` reads such a zip (or any ``ArchiveSource``: the Slack importer hands its
rows to the same path) into a NEW workspace: blobs first (each checked against its SHA-256),
then every row in one transaction (``storage.archive.import_rows``). A bad archive raises
``ArchiveInvalid`` with one line naming the file and row; nothing is written but blobs, which
no upload row names and the file collector removes after its grace period.

This module must never decide who may export or import: the command line is operator access.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import zipfile
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import IO, Any, TypeVar

import pydantic
import trio

from fechatter.domain.archive_check import CheckedSource, ImportLimits, check_file, check_name
from fechatter.models import utc_now
from fechatter.storage.archive import (
    ArchiveChat,
    ArchiveFile,
    ArchiveInvalid,
    ArchiveMember,
    ArchiveMessage,
    ArchiveReaction,
    ArchiveReads,
    ArchiveSource,
    ArchiveStore,
    ArchiveUser,
    ArchiveWorkspace,
    ImportResult,
    mentioned_ids,
)
from fechatter.storage.blobs import KEY, BlobMissing, BlobStore
from fechatter.storage.files import URL_PREFIX

__all__ = [
    "FORMAT",
    "VERSION",
    "ArchiveInvalid",
    "BlobCollected",
    "ZipSource",
    "export_workspace",
]

FORMAT = "fechatter-archive"
VERSION = 1
MAX_LINE = 1 << 20  # bytes per JSON line (a message of 4000 characters is far below)
# manifest.json and workspace.json are read whole: a member declaring more is refused before
# a byte is inflated (a zip bomb); zipfile never inflates past a member's declared size.
MAX_JSON_MEMBER = 1 << 20
COPY_CHUNK = 256 * 1024
SECTIONS = (
    "users",
    "workspace_members",
    "chats",
    "members",
    "messages",
    "reactions",
    "files",
)

T = TypeVar("T")


def _line(row: Any) -> bytes:
    return json.dumps(dataclasses.asdict(row), ensure_ascii=False).encode() + b"\n"


class BlobCollected(Exception):
    """A blob the export's rows name was removed by the file collector after the snapshot
    (its upload no longer referenced) before it was copied; the message is one line telling
    the operator to run the export again (nothing is written)."""


@dataclasses.dataclass(slots=True)
class ExportResult:
    """Rows written per section, and blobs."""

    counts: dict[str, int]


async def export_workspace(
    store: ArchiveStore,
    blobs: BlobStore,
    workspace_id: int,
    path: Path,
    *,
    after_chat: Callable[[int], Awaitable[None]] | None = None,
) -> ExportResult:
    """Write workspace ``workspace_id`` to the zip ``path`` (via ``path.partial``, renamed
    when complete). Every row comes from ONE snapshot of the database (``store.snapshot``),
    held while the rows are read and written, and closed before the blobs are copied.
    ``ArchiveInvalid`` if there is no such workspace; ``Unavailable`` if the database does
    not answer, ends the snapshot, or the snapshot outlives ``store.snapshot_limit``;
    ``BlobCollected`` if the file collector removed a blob between the snapshot and its copy
    (run the export again); ``BlobMissing`` if a file's bytes are gone while its row is not.
    The manifest's ``exported_at`` is the time the snapshot opened.

    ``after_chat`` (tests only) is awaited with each chat's id once its messages are written,
    so a test can write between chats at a known point of the export."""
    partial = path.with_name(path.name + ".partial")
    counts = dict.fromkeys((*SECTIONS, "blobs"), 0)
    try:
        with zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            async with store.snapshot() as reads:
                # The instant the archive shows: its snapshot's, not the end of the copy.
                exported_at = utc_now()
                file_rows, schema_version = await _write_rows(
                    reads, zf, workspace_id, counts, after_chat
                )
            counts["blobs"] = await _copy_blobs(store, blobs, file_rows, zf)
            manifest = {
                "format": FORMAT,
                "version": VERSION,
                "exported_at": exported_at,
                "schema_version": schema_version,
                "dialect": store.storage.dialect,
                "workspace_id": workspace_id,
                "counts": counts,
            }
            zf.writestr("manifest.json", json.dumps(manifest, indent=2))
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return ExportResult(counts)


async def _copy_blobs(
    store: ArchiveStore, blobs: BlobStore, file_rows: list[ArchiveFile], zf: zipfile.ZipFile
) -> int:
    """Copy each blob ``file_rows`` name (uploads and thumbnails) once into ``zf`` as
    ``files/<sha256>``, after the snapshot; how many. A blob gone meanwhile is
    ``BlobCollected`` when its upload rows are gone too (the collector removed them since
    the snapshot), else ``BlobMissing`` (the files directory lacks bytes its rows name)."""
    written: set[str] = set()
    for f in file_rows:
        for key in (f.sha256, f.thumb_sha256):
            if key and key not in written:
                try:
                    with zf.open(f"files/{key}", "w", force_zip64=True) as out:
                        async for chunk in blobs.read(key):
                            out.write(chunk)
                except BlobMissing:
                    named = [r.id for r in file_rows if key in (r.sha256, r.thumb_sha256)]
                    async with store.snapshot() as now:
                        if not await now.files(named):
                            raise BlobCollected(
                                f"file {key} was collected during the export (its message was"
                                " deleted after the export's snapshot); run the export again"
                            ) from None
                    raise
                written.add(key)
    return len(written)


async def _write_rows(
    reads: ArchiveReads,
    zf: zipfile.ZipFile,
    workspace_id: int,
    counts: dict[str, int],
    after_chat: Callable[[int], Awaitable[None]] | None,
) -> tuple[list[ArchiveFile], int]:
    """Every row section of the archive, read from one snapshot and written to ``zf``,
    counted in ``counts``; the upload rows whose blobs are to be copied, and the schema
    version. Streams: in memory are the chat ids and the user ids and file URLs named."""
    ws = await reads.workspace(workspace_id)
    if ws is None:
        raise ArchiveInvalid(f"no workspace with id {workspace_id}")
    users: set[int] = {ws.owner_id}
    file_urls: set[str] = set()
    zf.writestr("workspace.json", json.dumps(dataclasses.asdict(ws), ensure_ascii=False))
    with zf.open("workspace_members.jsonl", "w", force_zip64=True) as out:
        after = 0
        while batch := await reads.workspace_members(workspace_id, after):
            for m in batch:
                out.write(_line(m))
                users.add(m.user_id)
            counts["workspace_members"] += len(batch)
            after = batch[-1].user_id
    # (chat id, last seq): in one snapshot the last seq is simply the chat's last message.
    chats: list[tuple[int, int]] = []
    with zf.open("chats.jsonl", "w", force_zip64=True) as out:
        after = 0
        while chat_batch := await reads.chats(workspace_id, after):
            for chat, last_seq in chat_batch:
                out.write(_line(chat))
                users.add(chat.owner_id)
                chats.append((chat.id, last_seq))
            counts["chats"] += len(chat_batch)
            after = chat_batch[-1][0].id
    with zf.open("members.jsonl", "w", force_zip64=True) as out:
        for chat_id, _ in chats:
            after = 0
            while batch := await reads.chat_members(chat_id, after):
                for m in batch:
                    out.write(_line(m))
                    users.add(m.user_id)
                counts["members"] += len(batch)
                after = batch[-1].user_id
    with zf.open("messages.jsonl", "w", force_zip64=True) as out:
        for chat_id, last_seq in chats:
            after = 0
            while msgs := await reads.messages(chat_id, after, last_seq):
                for msg in msgs:
                    out.write(_line(msg))
                    users.add(msg.sender_id)
                    users.update(msg.mentions)
                    users.update(mentioned_ids(msg.content))
                    file_urls.update(msg.files)
                counts["messages"] += len(msgs)
                after = msgs[-1].seq
            if after_chat is not None:
                await after_chat(chat_id)
    with zf.open("reactions.jsonl", "w", force_zip64=True) as out:
        for chat_id, last_seq in chats:
            after = 0
            while reactions := await reads.reactions(chat_id, last_seq, after):
                for _, r in reactions:
                    out.write(_line(r))
                    users.add(r.user_id)
                counts["reactions"] += len(reactions)
                after = reactions[-1][0]
    user_rows = await _users(reads, users)
    file_urls.update(u.avatar for u in user_rows if u.avatar)
    file_ids = sorted(u.removeprefix(URL_PREFIX) for u in file_urls)
    file_rows: list[ArchiveFile] = []
    for start in range(0, len(file_ids), 500):
        file_rows += await reads.files(file_ids[start : start + 500])
    extra = {f.uploader_id for f in file_rows} - users
    if extra:
        user_rows += await _users(reads, extra)
    known = {URL_PREFIX + f.id for f in file_rows}
    with zf.open("users.jsonl", "w", force_zip64=True) as out:
        for u in sorted(user_rows, key=lambda u: u.id):
            # An avatar whose upload row is gone is not exported either.
            avatar = u.avatar if u.avatar in known else None
            out.write(_line(dataclasses.replace(u, avatar=avatar)))
        counts["users"] = len(user_rows)
    with zf.open("files.jsonl", "w", force_zip64=True) as out:
        for f in file_rows:
            out.write(_line(f))
        counts["files"] = len(file_rows)
    return file_rows, await reads.schema_version()


async def _users(reads: ArchiveReads, ids: set[int]) -> list[ArchiveUser]:
    ordered = sorted(ids)
    rows: list[ArchiveUser] = []
    for start in range(0, len(ordered), 500):
        rows += await reads.users(ordered[start : start + 500])
    return rows


# -- reading -------------------------------------------------------------------------------
_ADAPTERS: dict[type[Any], pydantic.TypeAdapter[Any]] = {
    cls: pydantic.TypeAdapter(cls)
    for cls in (
        ArchiveUser,
        ArchiveWorkspace,
        ArchiveMember,
        ArchiveChat,
        ArchiveMessage,
        ArchiveReaction,
        ArchiveFile,
    )
}


def parse_row(cls: type[T], text: str | bytes, where: str) -> T:
    """One archive row of type ``cls`` from its JSON text; ``ArchiveInvalid`` naming
    ``where`` and the first bad field."""
    try:
        value: T = _ADAPTERS[cls].validate_json(text)
    except pydantic.ValidationError as exc:
        error = exc.errors(include_url=False)[0]
        loc = ".".join(str(p) for p in error["loc"])
        raise ArchiveInvalid(f"{where}: {loc + ': ' if loc else ''}{error['msg']}") from None
    return value


class ZipSource:
    """The rows of an archive zip (an ``ArchiveSource``), read line by line. Each section is
    checked against the manifest's count when it ends (a file cut at a line boundary)."""

    def __init__(self, zf: zipfile.ZipFile) -> None:
        self._zf = zf
        self.manifest = self._manifest()
        self.blob_names = {n for n in zf.namelist() if n.startswith("files/")}

    def _manifest(self) -> dict[str, Any]:
        try:
            self._zf.getinfo("manifest.json")
        except KeyError:
            raise ArchiveInvalid("not a Fechatter archive: manifest.json is missing") from None
        raw = self._small("manifest.json")
        try:
            manifest = json.loads(raw)
        except ValueError:
            raise ArchiveInvalid("manifest.json: not JSON") from None
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
            raise ArchiveInvalid(f"manifest.json: format is not {FORMAT!r}")
        if manifest.get("version") != VERSION:
            raise ArchiveInvalid(
                f"manifest.json: archive version {manifest.get('version')!r} is not supported"
                f" (this server reads version {VERSION})"
            )
        counts = manifest.get("counts")
        if not isinstance(counts, dict) or not all(
            isinstance(counts.get(s), int) for s in SECTIONS
        ):
            raise ArchiveInvalid("manifest.json: counts must give a number for every file")
        return manifest

    def _small(self, name: str) -> bytes:
        """A JSON member read whole: at most ``MAX_JSON_MEMBER`` bytes, checked against its
        declared size before inflating and while reading."""
        try:
            size = self._zf.getinfo(name).file_size
        except KeyError:
            raise ArchiveInvalid(f"{name} is missing") from None
        if size > MAX_JSON_MEMBER:
            raise ArchiveInvalid(f"{name}: {size} bytes, over the {MAX_JSON_MEMBER} allowed")
        with self._open(name) as stream:
            try:
                raw = stream.read(MAX_JSON_MEMBER + 1)
            except (zipfile.BadZipFile, OSError, EOFError) as exc:
                raise ArchiveInvalid(f"{name}: unreadable ({exc})") from None
        if len(raw) > MAX_JSON_MEMBER:  # pragma: no cover - zipfile stops at the declared size
            raise ArchiveInvalid(f"{name}: over the {MAX_JSON_MEMBER} bytes allowed")
        return raw

    def _open(self, name: str) -> IO[bytes]:
        try:
            return self._zf.open(name)
        except KeyError:
            raise ArchiveInvalid(f"{name} is missing") from None
        except (zipfile.BadZipFile, OSError, EOFError) as exc:
            raise ArchiveInvalid(f"{name}: unreadable ({exc})") from None

    def _rows(self, section: str, cls: type[T]) -> Iterator[T]:
        name = f"{section}.jsonl"
        expected = self.manifest["counts"][section]
        n = 0
        with self._open(name) as stream:
            while True:
                try:
                    line = stream.readline(MAX_LINE + 1)
                except (zipfile.BadZipFile, OSError, EOFError) as exc:
                    raise ArchiveInvalid(f"{name} line {n + 1}: unreadable ({exc})") from None
                if not line:
                    break
                n += 1
                if len(line) > MAX_LINE:
                    raise ArchiveInvalid(f"{name} line {n}: longer than {MAX_LINE} bytes")
                if not line.endswith(b"\n"):
                    raise ArchiveInvalid(f"{name} line {n}: truncated (no end of line)")
                yield parse_row(cls, line, f"{name} line {n}")
        if n != expected:
            raise ArchiveInvalid(
                f"{name}: {n} rows where manifest.json counts {expected} (truncated?)"
            )

    def users(self) -> Iterator[ArchiveUser]:
        return self._rows("users", ArchiveUser)

    def files(self) -> Iterator[ArchiveFile]:
        for f in self._rows("files", ArchiveFile):
            for key in (f.sha256, f.thumb_sha256):
                if key is not None and (
                    KEY.fullmatch(key) is None or f"files/{key}" not in self.blob_names
                ):
                    raise ArchiveInvalid(f"files.jsonl file {f.id}: no blob files/{key}")
            yield f

    def workspace(self) -> ArchiveWorkspace:
        return parse_row(ArchiveWorkspace, self._small("workspace.json"), "workspace.json")

    def workspace_members(self) -> Iterator[ArchiveMember]:
        return self._rows("workspace_members", ArchiveMember)

    def chats(self) -> Iterator[ArchiveChat]:
        return self._rows("chats", ArchiveChat)

    def members(self) -> Iterator[ArchiveMember]:
        return self._rows("members", ArchiveMember)

    def messages(self) -> Iterator[ArchiveMessage]:
        return self._rows("messages", ArchiveMessage)

    def reactions(self) -> Iterator[ArchiveReaction]:
        return self._rows("reactions", ArchiveReaction)

    def copy_blob(self, key: str, blobs: BlobStore, size: int) -> Path:
        """Stream ``files/<key>`` into a scratch file of ``blobs``, checking that it has the
        ``size`` bytes files.jsonl declares (the copy stops as soon as it passes them: a zip
        bomb inflates no further) and its SHA-256; the scratch path (blocking: run it on a
        worker thread). ``ArchiveInvalid`` otherwise."""
        name = f"files/{key}"
        declared = self._zf.getinfo(name).file_size if name in self.blob_names else 0
        if declared > size:
            raise ArchiveInvalid(f"{name}: {declared} bytes where files.jsonl declares {size}")
        temp = blobs.scratch()
        digest = hashlib.sha256()
        copied = 0
        try:
            with self._open(name) as src, open(temp, "wb") as dst:
                while chunk := src.read(COPY_CHUNK):
                    copied += len(chunk)
                    if copied > size:  # pragma: no cover - zipfile stops at the declared size
                        raise ArchiveInvalid(f"{name}: more bytes than the {size} declared")
                    digest.update(chunk)
                    dst.write(chunk)
        except (zipfile.BadZipFile, OSError, EOFError) as exc:
            temp.unlink(missing_ok=True)
            raise ArchiveInvalid(f"{name}: unreadable ({exc})") from None
        except ArchiveInvalid:  # pragma: no cover - as above
            temp.unlink(missing_ok=True)
            raise
        if copied != size:
            temp.unlink(missing_ok=True)
            raise ArchiveInvalid(f"{name}: {copied} bytes where files.jsonl declares {size}")
        if digest.hexdigest() != key:
            temp.unlink(missing_ok=True)
            raise ArchiveInvalid(f"{name}: its bytes do not have that SHA-256")
        return temp


async def put_blobs(source: ZipSource, blobs: BlobStore, limits: ImportLimits | None = None) -> int:
    """Copy every blob files.jsonl names into ``blobs`` (each row checked by ``check_file``:
    sizes within ``limits.max_file_bytes``; each blob its declared size and SHA-256); how
    many. ``ArchiveInvalid`` for the first that is not."""
    done: set[str] = set()
    for raw in source.files():
        f = check_file(raw, limits or ImportLimits())
        for key, size in ((f.sha256, f.size), (f.thumb_sha256, f.thumb_size)):
            if key is not None and size is not None and key not in done:
                temp = await trio.to_thread.run_sync(source.copy_blob, key, blobs, size)
                await blobs.put(key, temp)
                done.add(key)
    return len(done)


async def import_archive(
    store: ArchiveStore,
    blobs: BlobStore,
    path: Path,
    workspace_name: str | None,
    limits: ImportLimits | None = None,
) -> ImportResult:
    """Import the archive zip at ``path`` as a new workspace, every row checked against
    ``limits`` (the target server's; default: the default settings') and the API's rules.
    ``ArchiveInvalid`` (one line) for a bad archive, with nothing written to the database."""
    try:
        zf = zipfile.ZipFile(path)
    except FileNotFoundError:
        raise ArchiveInvalid(f"{path}: no such file") from None
    except (zipfile.BadZipFile, OSError) as exc:
        raise ArchiveInvalid(f"{path}: not a zip archive ({exc})") from None
    with zf:
        source = ZipSource(zf)
        await put_blobs(source, blobs, limits)
        return await import_source(store, source, workspace_name, limits)


async def import_source(
    store: ArchiveStore,
    source: ArchiveSource,
    workspace_name: str | None,
    limits: ImportLimits | None = None,
) -> ImportResult:
    """Import any ``ArchiveSource`` (an archive, a Slack export) in one transaction, every
    row checked by ``CheckedSource`` (the API's rules, ``limits``). ``ArchiveInvalid`` naming
    the file, row and field of the first bad row (or ``--workspace-name``), nothing written."""
    if workspace_name is not None:
        workspace_name = check_name(workspace_name, "--workspace-name", "workspace name")
    checked = CheckedSource(source, limits or ImportLimits())
    return await store.import_rows(checked, workspace_name)
