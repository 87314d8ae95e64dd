"""The file routes of SPEC §8: an ASGI layer in front of the quart app, and ``/api/files/sign``.

Why ASGI and not quart: quart reads a request body into memory with no backpressure (its
``Body`` buffers every chunk hypercorn delivers), so a 20 MiB upload would be 20 MiB of RSS
per request. ``FileRoutes`` takes ``POST /api/files`` and ``GET``/``HEAD /files/<id>[/
thumbnail]`` before quart sees them and handles them with the body streamed:

- the upload's multipart body is parsed incrementally (``python_multipart``'s streaming
  parser) while it is read; the ``file`` part goes to a blob store scratch file in chunks of
  ``WRITE_CHUNK`` (hashed on the same worker thread), so memory stays bounded by a chunk
  whatever the file's size. Limits of its own: ``max_file_bytes`` (413 ``file_too_large`` as
  soon as it is passed, or at once when ``Content-Length`` says so), ``upload_timeout`` (408
  ``upload_timeout``); the scratch file is always removed (``Files.finish_upload`` or here);
- downloads stream the blob in ``READ_CHUNK`` pieces with ``Range``, ``ETag`` /
  ``If-None-Match``, ``nosniff``, a sandboxing CSP and ``Content-Disposition: attachment``
  for anything but a safe image type.

Every other request passes through to quart untouched. Errors are problem documents, as
everywhere (``problem_response`` shape), and a response sent before the body was read in full
closes the connection (``Connection: close``), as quart's routes do.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from collections.abc import Callable
from contextlib import aclosing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, cast
from urllib.parse import parse_qs, quote

import pydantic
import trio
from hypercorn.typing import (
    ASGIFramework,
    ASGIReceiveCallable,
    ASGISendCallable,
    ASGISendEvent,
    HTTPScope,
    Scope,
)
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from quart import Blueprint, Response
from quart_trio import QuartTrio

from fechatter import access_log
from fechatter.auth import bearer_token
from fechatter.domain.files import Files
from fechatter.errors import (
    BadRequest,
    FechatterError,
    Invalid,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    Unauthorized,
)
from fechatter.http.apidoc import SignedUrlsOut, doc
from fechatter.http.common import Context, current_user_id, json_response, read_json
from fechatter.http.drain import (
    DRAIN_BYTES,
    DRAIN_SECONDS,
    BodyState,
    declared_length,
    drain,
)
from fechatter.images import SAFE_IMAGE_TYPES
from fechatter.storage.blobs import BlobMissing
from fechatter.storage.files import FileRecord

log = logging.getLogger(__name__)

WRITE_CHUNK = 1024 * 1024  # bytes of a file part buffered before one write to the scratch file
# Bytes of a multipart body beyond the file itself: boundaries, part headers, small fields.
MULTIPART_OVERHEAD = 64 * 1024
# A refused request's body (an upload's, or any on the file routes) is read on and discarded
# after the answer was sent, before the connection closes, when its Content-Length is at most
# max_file_bytes + DRAIN_ENVELOPE (21 MiB by default: deploy/nginx.conf's client_max_body_size
# for uploads), for at most upload_timeout from the request's start: a proxy sends a buffered
# body whole before it reads the answer, and a node closing first fails its send (nginx: 502;
# fechatter.http.drain, which does the same for the other routes). A larger Content-Length, or
# a chunked body (a proxy always declares its buffered body's length), is answered at once and
# the connection closed, reading on only DRAIN_BYTES for DRAIN_SECONDS meanwhile.
DRAIN_ENVELOPE = 1024 * 1024
FILE_PATH = re.compile(r"/files/([A-Za-z0-9_-]{1,64})(/thumbnail)?")
SIGNABLE = re.compile(r"/files/[A-Za-z0-9_-]{1,64}(?:/thumbnail)?")
SAFE_TYPES = frozenset(SAFE_IMAGE_TYPES.values())
CSP = "default-src 'none'; sandbox"
PROBLEM = "application/problem+json"
UPLOAD_RULE = "/api/files"
DOWNLOAD_RULE = "/files/<id>"


class UploadTimeout(FechatterError):
    status = 408
    title = "Request Timeout"
    default_code = "upload_timeout"


@dataclass(slots=True)
class _Part:
    """The multipart part being parsed: its headers, then whether it is the file."""

    headers: dict[str, str] = field(default_factory=dict)
    field_name: bytes = b""
    header_value: bytes = b""
    name: str | None = None
    filename: str | None = None
    content_type: str | None = None


class _Upload:
    """One upload's parsing state, fed by ``MultipartParser`` callbacks (synchronous: they
    only record; the trio code around them writes). ``pending`` is the file data not yet
    written, never more than one receive chunk past ``WRITE_CHUNK``."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.part: _Part | None = None
        self.in_file = False
        self.files_seen = 0
        self.filename: str | None = None
        self.content_type: str | None = None
        self.pending = bytearray()
        self.size = 0
        self.ended = False

    def callbacks(self) -> dict[str, Callable[..., None]]:
        return {
            "on_part_begin": self._part_begin,
            "on_header_field": self._header_field,
            "on_header_value": self._header_value,
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": self._part_data,
            "on_part_end": self._part_end,
            "on_end": self._end,
        }

    def _part_begin(self) -> None:
        self.part = _Part()

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        assert self.part is not None
        self.part.field_name += data[start:end]

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        assert self.part is not None
        self.part.header_value += data[start:end]

    def _header_end(self) -> None:
        assert self.part is not None
        name = self.part.field_name.decode("latin-1").strip().lower()
        # latin-1 round-trips the raw bytes (parse_options_header encodes back to latin-1);
        # a file name is decoded as UTF-8 afterwards.
        self.part.headers[name] = self.part.header_value.decode("latin-1")
        self.part.field_name = self.part.header_value = b""

    def _headers_finished(self) -> None:
        assert self.part is not None
        try:
            disposition, params = parse_options_header(self.part.headers.get("content-disposition"))
        except ValueError:
            raise BadRequest(
                "malformed Content-Disposition in a part", code="malformed_multipart"
            ) from None
        name = params.get(b"name")
        self.in_file = disposition == b"form-data" and name == b"file"
        if self.in_file:
            self.files_seen += 1
            if self.files_seen > 1:
                raise Invalid.field("file", "give exactly one part named file")
            raw = params.get(b"filename")
            self.filename = raw.decode("utf-8", "replace") if raw is not None else None
            self.content_type = self.part.headers.get("content-type")

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if not self.in_file:
            return  # another field: ignored (bounded by the body limit)
        self.size += end - start
        if self.size > self.max_bytes:
            raise PayloadTooLarge(
                f"a file may have at most {self.max_bytes} bytes", code="file_too_large"
            )
        self.pending += data[start:end]

    def _part_end(self) -> None:
        self.in_file = False

    def _end(self) -> None:
        self.ended = True


def _write(f: BinaryIO, digest: Any, chunk: bytes) -> None:
    f.write(chunk)
    digest.update(chunk)


def _header(scope: HTTPScope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return None


def _problem_body(error: FechatterError) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    body = json.dumps(error.problem(), separators=(",", ":"), ensure_ascii=False).encode()
    headers = [(b"content-type", PROBLEM.encode())]
    headers += [(k.lower().encode(), v.encode("latin-1")) for k, v in error.headers.items()]
    return error.status, headers, body


def content_disposition(kind: str, name: str) -> str:
    """``kind; filename="ascii"; filename*=UTF-8''percent-encoded`` (RFC 6266)."""
    ascii_name = "".join(c if 32 <= ord(c) < 127 and c not in '"\\' else "_" for c in name)
    return f"{kind}; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(name, safe='')}"


def _digits(text: str) -> bool:
    """Whether ``text`` is one or more ASCII digits (what RFC 9110 calls ``1*DIGIT``)."""
    return text.isascii() and text.isdigit()


def parse_range(value: str, size: int) -> tuple[int, int] | bool | None:
    """One ``bytes=`` range of RFC 9110 §14 as ``(start, end_inclusive)``; None when the
    header is to be ignored (malformed, several ranges, another unit); False when it is
    unsatisfiable (416)."""
    unit, _, spec = value.partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first, dash, last = spec.strip().partition("-")
    # ASCII digits only: str.isdigit also takes "²" and the like, which int() refuses.
    if not dash or not (_digits(first) or first == "") or not (_digits(last) or last == ""):
        return None
    if first == "":
        if last == "" or int(last) == 0:
            return None if last == "" else False
        n = int(last)
        return (max(0, size - n), size - 1) if size > 0 else False
    start = int(first)
    end = size - 1 if last == "" else min(int(last), size - 1)
    if last != "" and int(last) < start:
        return None
    if start >= size:
        return False
    return start, end


class FileRoutes:
    """ASGI middleware: the upload and download routes of SPEC §8, the rest to ``app``."""

    def __init__(self, app: ASGIFramework, ctx: Context, files: Files) -> None:
        self.app = app
        self.ctx = ctx
        self.files = files

    async def __call__(
        self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        if scope["type"] == "http":
            http = scope
            path = http["path"]
            method = http["method"]
            if path == "/api/files":
                if method == "POST":
                    await self._timed(UPLOAD_RULE, method, self._upload, http, receive, send)
                    return
                if method not in ("OPTIONS",):
                    await self._refuse(http, receive, send, UPLOAD_RULE, "POST")
                    return
            match = FILE_PATH.fullmatch(path)
            if match is not None:
                if method in ("GET", "HEAD"):
                    await self._timed(DOWNLOAD_RULE, method, self._download, scope, receive, send)
                    return
                await self._refuse(http, receive, send, DOWNLOAD_RULE, "GET, HEAD")
                return
        await self.app(scope, receive, send)

    async def _refuse(
        self,
        scope: HTTPScope,
        receive: ASGIReceiveCallable,
        send: ASGISendCallable,
        rule: str,
        allow: str,
    ) -> None:
        error = MethodNotAllowed("method not allowed on this route", headers={"Allow": allow})
        status = await self._send_refusal(receive, send, error, self._body_state(scope))
        self._record(scope["method"], rule, status, 0.0)

    def _body_state(self, scope: HTTPScope) -> BodyState:
        """A request's body as far as its head tells: its declared length (None: chunked or
        malformed) and the deadline (trio time) for reading it, ``upload_timeout`` from now."""
        return BodyState(
            declared=declared_length(scope),
            deadline=trio.current_time() + self.ctx.settings.upload_timeout,
        )

    async def _send_refusal(
        self,
        receive: ASGIReceiveCallable,
        send: ASGISendCallable,
        error: FechatterError,
        body: BodyState,
    ) -> int:
        """Answer ``error`` (the whole problem document at once) and close the connection,
        having read the rest of the body first when its declared length is at most
        ``max_file_bytes + DRAIN_ENVELOPE`` (see ``DRAIN_ENVELOPE``); hypercorn closes as soon
        as the answer ends when the body was not read to its end. Returns the status."""
        status, headers, payload = _problem_body(error)
        headers = [
            *headers,
            (b"content-length", str(len(payload)).encode()),
            (b"connection", b"close"),
        ]
        bound = self.ctx.settings.max_file_bytes + DRAIN_ENVELOPE
        read_on = not body.complete and body.declared is not None and body.declared <= bound
        async with trio.open_nursery() as nursery:
            if not body.complete and not read_on:
                nursery.start_soon(drain, receive, DRAIN_BYTES, trio.current_time() + DRAIN_SECONDS)
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": payload, "more_body": True})
            if read_on:
                await drain(receive, bound - body.received, body.deadline)
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        return status

    def _record(self, method: str, rule: str, status: int, elapsed: float) -> None:
        self.ctx.metrics.requests.labels(method, rule, str(status)).inc()
        self.ctx.metrics.latency.labels(method, rule).observe(elapsed)

    async def _timed(
        self,
        rule: str,
        method: str,
        handler: Callable[..., Any],
        scope: HTTPScope,
        receive: ASGIReceiveCallable,
        send: ASGISendCallable,
    ) -> None:
        started = time.perf_counter()
        status = await handler(scope, receive, send)
        self._record(method, rule, status, time.perf_counter() - started)

    async def _send(
        self,
        send: ASGISendCallable,
        status: int,
        headers: list[tuple[bytes, bytes]],
        body: bytes,
        *,
        close: bool = False,
    ) -> None:
        headers = [*headers, (b"content-length", str(len(body)).encode())]
        if close:
            headers.append((b"connection", b"close"))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body, "more_body": False})

    async def _send_error(
        self, send: ASGISendCallable, error: FechatterError, *, close: bool
    ) -> int:
        status, headers, body = _problem_body(error)
        await self._send(send, status, headers, body, close=close)
        return status

    async def _user(self, scope: HTTPScope) -> int:
        token = bearer_token(_header(scope, b"authorization"))
        if token is None:
            raise Unauthorized("missing bearer token", code="missing_token")
        claims = self.ctx.auth.verify_access_token(token)
        await self.ctx.guard.check(claims)
        access_log.note_user(claims.user_id)
        return claims.user_id

    # -- POST /api/files -------------------------------------------------------------------
    async def _upload(
        self, scope: HTTPScope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> int:
        body = self._body_state(scope)
        try:
            await self._upload_body(scope, receive, send, body)
        except _Gone:
            return 499  # the client went away: nobody to answer (nginx's code, for metrics)
        except FechatterError as error:
            return await self._refuse_upload(receive, send, error, body)
        except Exception as exc:
            log.error("unhandled error on POST /api/files", exc_info=exc)
            return await self._refuse_upload(receive, send, FechatterError("internal error"), body)
        return 201

    async def _refuse_upload(
        self,
        receive: ASGIReceiveCallable,
        send: ASGISendCallable,
        error: FechatterError,
        body: BodyState,
    ) -> int:
        """Answer ``error`` and close the connection: ``_send_refusal`` (a proxy's buffered
        body is read to its end first; see ``DRAIN_ENVELOPE``)."""
        return await self._send_refusal(receive, send, error, body)

    async def _upload_body(
        self,
        scope: HTTPScope,
        receive: ASGIReceiveCallable,
        send: ASGISendCallable,
        body: BodyState,
    ) -> None:
        """Read, store and answer one upload; ``body.complete`` once it was read to its end."""
        settings = self.ctx.settings
        user_id = await self._user(scope)
        mimetype, params = parse_options_header(_header(scope, b"content-type"))
        boundary = params.get(b"boundary")
        if mimetype != b"multipart/form-data" or not boundary:
            raise BadRequest(
                "Content-Type must be multipart/form-data with a boundary",
                code="unsupported_content_type",
            )
        body_limit = settings.max_file_bytes + MULTIPART_OVERHEAD
        length = body.declared
        if length is not None and length > body_limit:
            raise PayloadTooLarge(
                f"a file may have at most {settings.max_file_bytes} bytes", code="file_too_large"
            )
        await self.files.admit(user_id, length)
        state = _Upload(settings.max_file_bytes)
        try:
            parser = MultipartParser(boundary, cast(Any, state.callbacks()), max_size=body_limit)
        except FormParserError:
            raise BadRequest("bad multipart boundary", code="malformed_multipart") from None
        temp = self.files.blobs.scratch()
        digest = hashlib.sha256()
        try:
            f = await trio.to_thread.run_sync(temp.open, "xb")
            try:
                with trio.move_on_after(settings.upload_timeout) as timer:
                    while not body.complete:
                        message = await receive()
                        if message["type"] == "http.disconnect":
                            raise _Gone()
                        chunk = bytes(cast(bytes, message.get("body", b"")))
                        body.complete = not message.get("more_body", False)
                        body.received += len(chunk)
                        if body.received > body_limit:
                            raise PayloadTooLarge(
                                f"a file may have at most {settings.max_file_bytes} bytes",
                                code="file_too_large",
                            )
                        try:
                            parser.write(chunk)
                        except FormParserError:
                            raise BadRequest(
                                "malformed multipart body", code="malformed_multipart"
                            ) from None
                        if len(state.pending) >= WRITE_CHUNK or (body.complete and state.pending):
                            data = bytes(state.pending)
                            state.pending.clear()
                            await trio.to_thread.run_sync(_write, f, digest, data)
                if timer.cancelled_caught:
                    raise UploadTimeout(
                        f"the upload took longer than {settings.upload_timeout:g} seconds"
                    )
            finally:
                with trio.CancelScope(shield=True):
                    await trio.to_thread.run_sync(f.close)
            if not state.ended:
                raise BadRequest("the multipart body ended early", code="malformed_multipart")
            if state.files_seen == 0:
                raise Invalid.field("file", "is required (a part named file)")
        except BaseException:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(temp.unlink, True)
            raise
        record = await self.files.finish_upload(
            user_id, state.filename, state.content_type, temp, state.size, digest.hexdigest()
        )
        answer = json.dumps(record.to_json(), separators=(",", ":"), ensure_ascii=False)
        headers = [(b"content-type", b"application/json"), (b"location", record.url.encode())]
        await self._send(send, 201, headers, answer.encode())

    # -- GET/HEAD /files/<id>[/thumbnail] ----------------------------------------------------
    async def _download(
        self, scope: HTTPScope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> int:
        started = False

        async def tracked(message: ASGISendEvent) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            return await self._serve_file(scope, tracked)
        except FechatterError as error:
            if started:  # pragma: no cover - every refusal comes before the head
                raise
            return await self._send_error(send, error, close=False)
        except Exception as exc:
            # A file-system error mid-way: logged; the client gets a 500 if nothing was sent
            # yet, else a cut-short body (its Content-Length tells it).
            log.error("unhandled error on GET %s", DOWNLOAD_RULE, exc_info=exc)
            if started:
                return 500
            return await self._send_error(send, FechatterError("internal error"), close=True)

    async def _reader(self, scope: HTTPScope) -> int:
        """The user a download is for: the bearer token, else a signed URL's."""
        if _header(scope, b"authorization") is not None:
            return await self._user(scope)
        query = parse_qs(bytes(scope["query_string"]).decode("latin-1"))
        uid, exp, sig = (query.get(k, [""])[0] for k in ("uid", "exp", "sig"))
        if not (uid or exp or sig):
            raise Unauthorized("missing bearer token or signed URL", code="missing_token")
        user_id = await self.files.verify(scope["path"], uid, exp, sig)
        if user_id is None:
            raise Unauthorized(
                "the signed URL is invalid or expired; sign it again (POST /api/files/sign)",
                code="invalid_signature",
            )
        access_log.note_user(user_id)
        return user_id

    async def _serve_file(self, scope: HTTPScope, send: ASGISendCallable) -> int:
        match = FILE_PATH.fullmatch(scope["path"])
        assert match is not None
        file_id, thumbnail = match.group(1), match.group(2) is not None
        user_id = await self._reader(scope)
        record = await self.files.readable(file_id, user_id)
        if thumbnail:
            if record.thumb_sha256 is None or record.thumb_type is None:
                raise NotFound("file not found", code="file_not_found")
            key, kind, size = record.thumb_sha256, record.thumb_type, record.thumb_size or 0
            name = f"{Path(record.name).stem or 'file'}-thumbnail" + (
                ".png" if kind == "image/png" else ".jpg"
            )
        else:
            key, kind, size, name = record.sha256, record.content_type, record.size, record.name
        return await self._stream(scope, send, record, key, kind, size, name)

    async def _stream(
        self,
        scope: HTTPScope,
        send: ASGISendCallable,
        record: FileRecord,
        key: str,
        kind: str,
        size: int,
        name: str,
    ) -> int:
        etag = f'"{key}"'
        headers: list[tuple[bytes, bytes]] = [
            (b"etag", etag.encode()),
            (b"x-content-type-options", b"nosniff"),
            (b"content-security-policy", CSP.encode()),
            (b"cross-origin-resource-policy", b"same-origin"),
            (b"cache-control", b"private, no-cache"),
            (b"accept-ranges", b"bytes"),
        ]
        if_none = _header(scope, b"if-none-match")
        tags = [t.strip().removeprefix("W/") for t in (if_none or "").split(",")]
        if if_none is not None and (if_none.strip() == "*" or etag in tags):
            # No Content-Length: a 304's may only be the 200's (RFC 9110 §8.6), never "0".
            await send({"type": "http.response.start", "status": 304, "headers": headers})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            return 304
        disposition = "inline" if kind in SAFE_TYPES else "attachment"
        headers += [
            (b"content-type", kind.encode()),
            (b"content-disposition", content_disposition(disposition, name).encode()),
        ]
        start, end, status = 0, size - 1, 200
        wanted = _header(scope, b"range")
        if_range = _header(scope, b"if-range")
        if wanted is not None and (if_range is None or if_range.strip() == etag):
            chosen = parse_range(wanted, size)
            if chosen is False:
                headers.append((b"content-range", f"bytes */{size}".encode()))
                error_headers = [h for h in headers if h[0] != b"content-type"]
                await self._send(send, 416, error_headers, b"")
                return 416
            if isinstance(chosen, tuple):
                start, end = chosen
                status = 206
                headers.append((b"content-range", f"bytes {start}-{end}/{size}".encode()))
        length = max(0, end - start + 1)
        try:
            actual = await self.files.blobs.size(key)
        except BlobMissing:
            log.warning("file %s: its blob %s is missing from the store", record.id, key)
            raise NotFound("file not found", code="file_not_found") from None
        if actual != size:
            log.warning("file %s: blob %s has %d bytes, %d expected", record.id, key, actual, size)
        headers.append((b"content-length", str(length).encode()))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        if scope["method"] == "HEAD" or length == 0:
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            return status
        async with aclosing(self.files.blobs.read(key, start, length)) as chunks:
            async for chunk in chunks:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        return status


class _Gone(Exception):
    """The client disconnected during the upload."""


class FileSignIn(pydantic.BaseModel):
    """``POST /api/files/sign``: the file or thumbnail URLs to sign (1..100)."""

    model_config = pydantic.ConfigDict(extra="forbid")
    urls: list[str] = pydantic.Field(min_length=1, max_length=100)

    @pydantic.field_validator("urls")
    @classmethod
    def _file_urls(cls, urls: list[str]) -> list[str]:
        for url in urls:
            if not isinstance(url, str) or SIGNABLE.fullmatch(url) is None:
                raise ValueError("each must be a file or thumbnail URL (/files/<id>[/thumbnail])")
        return urls


def register(app: QuartTrio, ctx: Context, files: Files) -> None:
    """``POST /api/files/sign`` (the other file routes are ``FileRoutes``)."""
    bp = Blueprint("files", __name__)

    @bp.post("/api/files/sign")
    @doc(
        "files",
        "Signed URLs for file and thumbnail URLs (≤ 1 h, bound to the caller)",
        body=FileSignIn,
        ok={200: SignedUrlsOut},
        errors=(404,),
    )
    async def sign() -> Response:
        user_id = await current_user_id(ctx)
        body = await read_json(FileSignIn)
        return json_response({"urls": await files.sign(user_id, body.urls)})

    app.register_blueprint(bp)
