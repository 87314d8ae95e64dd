"""Domain errors and their one mapping to HTTP problem documents.

The exception tree::

    FechatterError              base; carries status, code, detail, field errors
    ├── BadRequest      400     malformed JSON, wrong content type, bad query value
    ├── Unauthorized    401     missing / malformed / expired / forged token, bad credentials
    ├── Forbidden       403     a member whose role does not allow the action
    ├── NotFound        404     absent, or the caller may not know it exists
    ├── MethodNotAllowed 405
    ├── Conflict        409     uniqueness conflict
    ├── PayloadTooLarge 413
    ├── Invalid         422     well-formed but invalid input (field errors)
    ├── HeadersTooLarge 431     request head over the limit (realtime listener)
    ├── RateLimited     429     carries retry_after seconds
    ├── Unavailable     503     storage / actor unavailable; carries retry_after
    │   ├── DatabaseUnreachable 503  a database connection (or the SQLite file) could not
    │   │                         be opened: the command line's "cannot connect" (only this)
    │   ├── ChatMoved   503     this node no longer owns the chat (cluster fencing, retryable)
    │   └── ProtocolMismatch 503  a cluster peer speaks another protocol version (also a
    │                             CodecError): not executed, retry at another node
    └── CodecError      500     a cluster frame this node cannot read (fechatter.cluster.codec)

Driver and transport errors are translated into these where they enter (storage backends,
the realtime listener); nothing else in the code base catches driver exceptions. This module
must never import from the HTTP framework: the realtime listener uses it too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar


@dataclass(frozen=True, slots=True)
class FieldError:
    """One invalid input field."""

    field: str
    message: str


class FechatterError(Exception):
    """Base of every error that becomes a problem document."""

    status: ClassVar[int] = 500
    title: ClassVar[str] = "Internal Server Error"
    default_code: ClassVar[str] = "internal_error"

    def __init__(
        self,
        detail: str,
        *,
        code: str | None = None,
        errors: list[FieldError] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.code = code or self.default_code
        self.errors = errors or []
        self.headers: dict[str, str] = dict(headers or {})

    def problem(self) -> dict[str, Any]:
        """The RFC 9457 problem document for this error."""
        doc: dict[str, Any] = {
            "type": "about:blank",
            "title": self.title,
            "status": self.status,
            "code": self.code,
            "detail": self.detail,
        }
        if self.errors:
            doc["errors"] = [{"field": e.field, "message": e.message} for e in self.errors]
        return doc

    def __reduce__(self) -> tuple[Any, ...]:
        # Errors cross process boundaries as replies (a forwarded actor call): rebuild them
        # field for field, whatever a subclass's constructor takes.
        return (rebuild, (type(self), self.detail, self.code, self.errors, self.headers))


_E = TypeVar("_E", bound="FechatterError")


def rebuild(
    cls: type[_E],
    detail: str,
    code: str,
    errors: list[FieldError],
    headers: dict[str, str],
) -> _E:
    """An error of class ``cls`` with exactly these fields, whatever its constructor takes
    (``RateLimited`` wants ``retry_after``; ``Unauthorized`` adds a header): how an error that
    crossed a process boundary is rebuilt."""
    error = cls.__new__(cls)
    Exception.__init__(error, detail)
    error.detail, error.code, error.errors, error.headers = detail, code, errors, headers
    return error


class BadRequest(FechatterError):
    status = 400
    title = "Bad Request"
    default_code = "bad_request"


class Unauthorized(FechatterError):
    status = 401
    title = "Unauthorized"
    default_code = "unauthorized"

    def __init__(self, detail: str = "authentication required", **kw: Any) -> None:
        super().__init__(detail, **kw)
        self.headers.setdefault("WWW-Authenticate", 'Bearer realm="fechatter"')


class Forbidden(FechatterError):
    status = 403
    title = "Forbidden"
    default_code = "forbidden"


class NotFound(FechatterError):
    status = 404
    title = "Not Found"
    default_code = "not_found"


class MethodNotAllowed(FechatterError):
    status = 405
    title = "Method Not Allowed"
    default_code = "method_not_allowed"


class Conflict(FechatterError):
    status = 409
    title = "Conflict"
    default_code = "conflict"


class PayloadTooLarge(FechatterError):
    status = 413
    title = "Content Too Large"
    default_code = "payload_too_large"


class Invalid(FechatterError):
    status = 422
    title = "Unprocessable Content"
    default_code = "validation_error"

    @classmethod
    def field(cls, field: str, message: str, code: str | None = None) -> Invalid:
        """A validation error about one field (``code`` defaults to ``validation_error``)."""
        return cls(f"{field} {message}", code=code, errors=[FieldError(field, message)])


class HeadersTooLarge(FechatterError):
    status = 431
    title = "Request Header Fields Too Large"
    default_code = "headers_too_large"


class RateLimited(FechatterError):
    status = 429
    title = "Too Many Requests"
    default_code = "rate_limited"

    def __init__(self, detail: str, *, retry_after: float, **kw: Any) -> None:
        super().__init__(detail, **kw)
        self.headers["Retry-After"] = str(max(1, int(retry_after + 0.999)))


class Unavailable(FechatterError):
    status = 503
    title = "Service Unavailable"
    default_code = "unavailable"

    def __init__(self, detail: str = "service temporarily unavailable", **kw: Any) -> None:
        retry_after = kw.pop("retry_after", 1)
        super().__init__(detail, **kw)
        self.headers["Retry-After"] = str(retry_after)


class DatabaseUnreachable(Unavailable):
    """Opening a database connection failed (PostgreSQL: the connect; SQLite: opening the
    file): raised only where a connection or the file is opened, with the driver's error as
    ``__cause__``. A failure of an open connection is a plain ``Unavailable``: the command
    line says "cannot connect" for this one only (``fechatter.cli_errors.database_error``)."""


class CodecError(FechatterError):
    """A cluster frame (forwarded command, reply or error) this node cannot read: not JSON,
    the wrong shape, a missing field, a value of the wrong type, or a value this node cannot
    put on the wire. Between nodes of one version it is a bug, so 500; the same bytes would
    fail on every node, so it is not worth retrying elsewhere."""

    status = 500
    title = "Internal Server Error"
    default_code = "cluster_codec_error"


class ProtocolMismatch(Unavailable, CodecError):
    """A cluster peer speaks another protocol version, or a newer vocabulary of this one (a
    command, field or error this node does not know): the frame was refused before anything
    ran. During a rolling upgrade it is transient and the command may be retried at another
    node, hence 503 with ``Retry-After`` (docs/cluster.md §3 "Versions")."""

    default_code = "protocol_mismatch"


class ChatMoved(Unavailable):
    """The chat's lease moved to another node (or epoch) since this node took it: the
    fenced write (``fechatter_fence``, SQLSTATE FX001) rolled back and wrote nothing. The
    caller re-resolves the owner and retries (docs/cluster.md §2); a client sees it only if
    every retry fails."""

    default_code = "chat_moved"
