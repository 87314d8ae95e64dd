"""Files: uploads, who may read them, signed URLs, avatars, message files, the collector.

SPEC §8 and docs/api.md "Files". The HTTP edge (``fechatter.http.files``) streams an upload
into a blob store scratch file and hands it here finished (size and SHA-256 computed on the
way); this module decides everything else and never parses HTTP:

- **reading**: the uploader, or anyone who may read a non-deleted message referencing the
  URL, or (for an avatar) anyone sharing a workspace with its user; everyone else gets the
  same 404 as for a URL that never existed;
- **signed URLs**: ``<url>?uid=&exp=&sig=``, an HMAC-SHA256 under a key derived from the JWT
  secret over the path, the user, the expiry and the user's security version, so a URL works
  for its user only, for at most ``file_url_ttl`` seconds, and stops at a sign-out everywhere
  or a password change; the access rule is still checked on every use;
- **limits**: the per-user upload rate (429 ``upload_rate_limited``) and quota (413
  ``upload_quota_exceeded``); the size limit is enforced while streaming, by the edge;
- **the garbage collector** (``serve_collector``): uploads older than ``file_gc_grace`` that
  no non-deleted message and no avatar references lose their row, then blobs no row names
  and older than the grace are deleted, so a referenced blob is never removed.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import math
import secrets
import time
import unicodedata
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import trio

from fechatter import images
from fechatter.config import Settings
from fechatter.errors import Invalid, NotFound, PayloadTooLarge, Unavailable
from fechatter.models import format_time, utc_now
from fechatter.ratelimit import RateLimiter
from fechatter.storage import Storage
from fechatter.storage.blobs import BlobStore
from fechatter.storage.files import URL_PREFIX, FileRecord, FileStore

log = logging.getLogger(__name__)

FILE_ID_BYTES = 16  # 128 random bits: 22 URL-safe characters
MAX_NAME_CHARS = 255
SIGNING_CONTEXT = b"fechatter file URL signing v1"
_ID_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def file_id_of(url: str) -> str | None:
    """The upload id in ``/files/<id>``, or None for anything else (a thumbnail URL too)."""
    if not url.startswith(URL_PREFIX):
        return None
    rest = url[len(URL_PREFIX) :]
    if not 1 <= len(rest) <= 64 or not set(rest) <= _ID_CHARS:
        return None
    return rest


def clean_name(raw: str | None) -> str:
    """A file name safe to store and show: the last path component, NFC, no control or
    bidirectional formatting characters, at most ``MAX_NAME_CHARS``; ``file`` if empty."""
    name = (raw or "").replace("\\", "/").rsplit("/", 1)[-1]
    name = unicodedata.normalize("NFC", name)
    name = "".join(
        c for c in name if unicodedata.category(c) not in ("Cc", "Cf", "Cs", "Co", "Cn")
    ).strip()
    if name in ("", ".", ".."):
        return "file"
    return name[:MAX_NAME_CHARS]


def clean_type(claimed: str | None) -> str:
    """The client's content type for a file that is not a safe image: kept when it is a
    well-formed ``type/subtype`` (parameters dropped) and does not claim an image the bytes
    did not prove, else ``application/octet-stream``."""
    value = (claimed or "").split(";", 1)[0].strip().lower()
    kind, _, sub = value.partition("/")
    token = set("abcdefghijklmnopqrstuvwxyz0123456789!#$&^_.+-")
    if not kind or not sub or not set(kind) <= token or not set(sub) <= token or len(value) > 100:
        return "application/octet-stream"
    if kind == "image" and sub != "svg+xml":
        return "application/octet-stream"
    return value


class Files:
    """File use cases over the file metadata, the blob store and the security versions."""

    def __init__(
        self,
        storage: Storage,
        store: FileStore,
        blobs: BlobStore,
        settings: Settings,
        secret: str,
    ) -> None:
        self._storage = storage
        self.store = store
        self.blobs = blobs
        self.settings = settings
        self._key = hmac.new(secret.encode(), SIGNING_CONTEXT, hashlib.sha256).digest()
        self._images = trio.CapacityLimiter(settings.image_threads)
        self.limiter = RateLimiter(
            settings.upload_rate,
            settings.upload_burst,
            trio.current_time,
            detail="too many uploads; slow down",
            code="upload_rate_limited",
        )

    # -- uploading -----------------------------------------------------------------------
    async def admit(self, user_id: int, declared: int | None) -> None:
        """Before streaming: the upload rate (``RateLimited`` 429 ``upload_rate_limited``),
        then the quota with the declared body size, if any (``PayloadTooLarge`` 413
        ``upload_quota_exceeded``); a refused upload uses no rate token."""
        self.limiter.acquire(user_id)
        if declared is not None:
            try:
                await self.check_quota(user_id, declared)
            except PayloadTooLarge:
                self.limiter.refund(user_id)
                raise

    async def check_quota(self, user_id: int, incoming: int) -> None:
        """``PayloadTooLarge`` (``upload_quota_exceeded``) if ``incoming`` more bytes would
        take the user's stored uploads past ``upload_quota_bytes``."""
        used = await self.store.usage(user_id)
        if used + incoming > self.settings.upload_quota_bytes:
            raise PayloadTooLarge(
                f"upload quota of {self.settings.upload_quota_bytes} bytes reached ({used} stored)",
                code="upload_quota_exceeded",
            )

    async def finish_upload(
        self,
        user_id: int,
        name: str | None,
        claimed_type: str | None,
        temp: Path,
        size: int,
        sha256: str,
    ) -> FileRecord:
        """Store a streamed upload: detect an image (thumbnail made on a worker thread), move
        the blobs in, write the row. ``temp`` is consumed (moved or deleted) either way.

        Raises ``Invalid`` (``image_too_large``: a decompression bomb; ``empty_file``),
        ``PayloadTooLarge`` (``upload_quota_exceeded``), ``Unavailable``.
        """
        thumb_temp: Path | None = None
        try:
            if size == 0:
                raise Invalid.field("file", "must not be empty", code="empty_file")
            try:
                info = await trio.to_thread.run_sync(
                    images.probe, temp, self.settings.max_image_pixels, limiter=self._images
                )
            except images.ImageTooLarge as exc:
                raise Invalid.field("file", str(exc), code="image_too_large") from None
            thumb_key = thumb_size = None
            if info is not None:
                thumb_key = hashlib.sha256(info.thumbnail).hexdigest()
                thumb_size = len(info.thumbnail)
            await self.check_quota(user_id, size + (thumb_size or 0))
            if info is not None and thumb_key is not None:
                thumb_temp = self.blobs.scratch()
                await trio.to_thread.run_sync(thumb_temp.write_bytes, info.thumbnail)
                await self.blobs.put(thumb_key, thumb_temp)
                thumb_temp = None
            await self.blobs.put(sha256, temp)
            record = FileRecord(
                id=secrets.token_urlsafe(FILE_ID_BYTES),
                uploader_id=user_id,
                name=clean_name(name),
                size=size,
                content_type=info.content_type if info else clean_type(claimed_type),
                sha256=sha256,
                width=info.width if info else None,
                height=info.height if info else None,
                thumb_sha256=thumb_key,
                thumb_type=info.thumbnail_type if info else None,
                thumb_size=thumb_size,
                created_at=utc_now(),
            )
            await self.store.insert(record)
            return record
        finally:
            with trio.CancelScope(shield=True):
                for leftover in (temp, thumb_temp):
                    if leftover is not None:
                        await trio.to_thread.run_sync(leftover.unlink, True)

    # -- reading ---------------------------------------------------------------------------
    async def readable(self, file_id: str, user_id: int) -> FileRecord:
        """The upload if ``user_id`` may read it (SPEC §8), else ``NotFound``
        (``file_not_found``, the same as for an id that never existed)."""
        record = await self.store.get(file_id)
        if record is not None and (
            record.uploader_id == user_id or await self.store.readable(record.url, user_id)
        ):
            return record
        raise NotFound("file not found", code="file_not_found")

    # -- signed URLs -----------------------------------------------------------------------
    def _signature(self, path: str, user_id: int, expires: int, version: int) -> str:
        text = f"{path}\n{user_id}\n{expires}\n{version}".encode()
        return hmac.new(self._key, text, hashlib.sha256).hexdigest()

    async def sign(
        self, user_id: int, urls: Sequence[str], now: float | None = None
    ) -> dict[str, str]:
        """``{url: signed_url}`` for the caller: each of ``urls`` (a file or thumbnail URL)
        with ``uid``, ``exp`` (POSIX seconds, ``file_url_ttl`` ahead) and ``sig``. Signing
        proves nothing about access, which is checked when the URL is used."""
        state = await self._storage.security_state(user_id)
        if state is None or not state.active:
            raise NotFound("user not found", code="user_not_found")
        expires = math.ceil((time.time() if now is None else now) + self.settings.file_url_ttl)
        out: dict[str, str] = {}
        for url in urls:
            sig = self._signature(url, user_id, expires, state.version)
            out[url] = f"{url}?uid={user_id}&exp={expires}&sig={sig}"
        return out

    async def verify(self, path: str, uid: str, exp: str, sig: str) -> int | None:
        """The user a signed URL stands for, or None (forged, expired, of another path, or
        the user's security version moved since it was signed)."""
        if not (uid.isascii() and uid.isdigit() and exp.isascii() and exp.isdigit()):
            return None
        if len(uid) > 19 or len(exp) > 12 or int(exp) < time.time():
            return None
        user_id = int(uid)
        state = await self._storage.security_state(user_id)
        if state is None or not state.active:
            return None
        expected = self._signature(path, user_id, int(exp), state.version)
        # As bytes: compare_digest refuses (TypeError) a str with non-ASCII characters.
        given = sig.encode("utf-8", "surrogateescape")
        return user_id if hmac.compare_digest(expected.encode(), given) else None

    # -- references ------------------------------------------------------------------------
    async def check_message_files(self, user_id: int, urls: Sequence[str]) -> None:
        """``Invalid`` naming ``files`` unless every URL is an upload of ``user_id``'s.
        The uploads found are claimed (``FileStore.claim``): the collector keeps them for
        another ``file_gc_grace``, time enough for the message to commit."""
        if not urls:
            return
        ids = [file_id_of(u) for u in urls]
        found = await self.store.claim(user_id, [i for i in ids if i is not None], utc_now())
        bad = [u for u, i in zip(urls, ids, strict=True) if i is None or i not in found]
        if bad:
            raise Invalid.field(
                "files", f"must be URLs of your own uploads (not: {', '.join(bad[:3])})"
            )

    async def check_avatar(self, user_id: int, url: str) -> None:
        """``Invalid`` naming ``avatar`` unless ``url`` is an image ``user_id`` uploaded (then
        claimed, as for a message's files)."""
        file_id = file_id_of(url)
        found = await self.store.claim(user_id, [file_id], utc_now()) if file_id else {}
        if not found.get(file_id or ""):
            raise Invalid.field("avatar", "must be the URL of an image you uploaded")

    # -- garbage collection ----------------------------------------------------------------
    async def collect(self, now: float | None = None) -> tuple[int, int]:
        """One collector pass: ``(uploads expired, blobs deleted)``. Blobs modified within the
        grace are kept whatever the rows say (an upload between its blob's rename and its row
        insert); every other blob no row names goes."""
        grace = self.settings.file_gc_grace
        wall = time.time() if now is None else now
        cutoff = format_time(datetime.fromtimestamp(wall, UTC) - timedelta(seconds=grace))
        expired = await self.store.expire(cutoff)
        deleted = 0
        async for batch in self.blobs.keys():
            old = [key for key, modified in batch if modified < wall - grace]
            if not old:
                continue
            keep = await self.store.referenced(old)
            for key in old:
                if key not in keep and await self.blobs.delete(key, wall - grace):
                    deleted += 1
        await self.blobs.sweep_scratch(max(grace, 2 * self.settings.upload_timeout))
        return len(expired), deleted

    async def serve_collector(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Run ``collect`` every ``file_gc_interval`` seconds, forever. A pass that fails
        (the database unavailable, a file-system error) is logged and retried next time."""
        task_status.started()
        while True:
            await trio.sleep(self.settings.file_gc_interval)
            try:
                uploads, blobs = await self.collect()
            except (Unavailable, OSError) as exc:
                log.warning("file collector pass failed: %s", exc)
                continue
            if uploads or blobs:
                log.info("file collector: %d uploads expired, %d blobs deleted", uploads, blobs)
