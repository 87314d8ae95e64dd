"""The access log (setting ``access_log``, flag ``--access-log``; off by default): one line per
request on either listener, with every secret a request line can carry redacted.

A line is an INFO record of the ``fechatter.access`` logger, rendered by ``fechatter.logs``
like every other (JSON or text, with the request's bound context: ``request_id``,
``connection_id``), with the fields ``listener`` (``api``/``realtime``), ``method``, ``path``
(path and query, redacted), ``status`` (0: the connection closed without an answer),
``duration_ms``, ``bytes`` (sent to the client: head and body, a stream's events included),
``client`` (the address, through ``trusted_proxies``) and ``user_id`` when the request
authenticated. Headers are never logged (``Authorization``, ``Cookie``), nor bodies.

Redacted (value replaced by ``[redacted]``, the name kept):

- query parameters whose name contains ``token``, ``secret``, ``password`` or ``key``, or is
  ``sig`` / ``signature`` (``access_token``, ``refresh_token``, signed file URLs' ``sig``);
- the invite token in ``/api/invites/<token>``, ``/api/invites/<token>/accept`` and the
  landing page ``/invite/<token>``, and the password-reset token in
  ``/api/password-resets/<token>`` and the page ``/reset-password/<token>`` (whatever follows
  the prefix, matched without regard to case, percent-encoding or repeated slashes);
- an absolute-form request target (``GET http://host:port/path``, RFC 9112 §3.2.2) is
  matched on its path: its ``scheme://authority`` is kept and the rest redacted as above;
  any other target that does not start with ``/`` (authority or asterisk form, garbage) is
  logged as ``[redacted]`` whole;
- anything ``fechatter.logs`` recognises as a secret elsewhere in the line (JWTs).

Pure functions and one small record; no I/O but the logging call. Both listeners use it, so it
imports no transport.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from urllib.parse import unquote_plus

from fechatter import logs
from fechatter.client_address import IPNetwork, client_address, parse_networks

LOGGER = "fechatter.access"
REDACTED = logs.REDACTED
MAX_PATH_CHARS = 2048  # a logged path+query is cut here (heads are bounded at 16 KiB anyway)

log = logging.getLogger(LOGGER)

_SECRET_PARAM_PARTS = ("token", "secret", "password", "key")
_SECRET_PARAMS = frozenset({"sig", "signature"})
# A path whose rest is a secret: /api/invites/<token>[/accept], /invite/<token>,
# /api/password-resets/<token>, /reset-password/<token>.
_SECRET_PATH = re.compile(
    r"(?i)^(/+api/+invites/+|/+invite/+|/+api/+password-resets/+|/+reset-password/+)(.*)$",
    re.DOTALL,
)
# An absolute-form target's scheme and authority (RFC 9112 §3.2.2), kept as sent.
_ABSOLUTE = re.compile(r"(?i)^([a-z][a-z0-9+.-]*://[^/?#]*)(.*)$", re.DOTALL)
_ACCEPT = re.compile(r"(?i)^[^/]*/+accept/*$")


def secret_param(name: str) -> bool:
    """Whether a query parameter named ``name`` (as sent, percent-encoded) holds a secret."""
    lowered = unquote_plus(name).lower()
    return lowered in _SECRET_PARAMS or any(part in lowered for part in _SECRET_PARAM_PARTS)


def redact_path(path: str) -> str:
    """``path`` (without its query) with an invite or reset token replaced by ``[redacted]``;
    an absolute-form target keeps its ``scheme://authority``, any other target not starting
    with ``/`` is ``[redacted]`` whole."""
    absolute = _ABSOLUTE.match(path)
    if absolute is not None:
        authority, rest = absolute.groups()
        return authority + (redact_path(rest) if rest.startswith("/") or not rest else REDACTED)
    if path and not path.startswith("/"):
        return REDACTED
    match = _SECRET_PATH.match(unquote_plus(path))
    if match is None:
        return path
    prefix, rest = match.groups()
    if not rest:
        return path
    return prefix + REDACTED + ("/accept" if _ACCEPT.match(rest) else "")


def redact_query(query: str) -> str:
    """A query string with the values of secret parameters replaced by ``[redacted]``."""
    if not query:
        return ""
    parts = []
    for part in query.split("&"):
        name, eq, _ = part.partition("=")
        parts.append(f"{name}={REDACTED}" if eq and secret_param(name) else part)
    return "&".join(parts)


def redact_target(path: str, query: str) -> str:
    """What the access line shows of a request target: ``path?query``, both redacted (and
    anything else ``fechatter.logs`` recognises as a secret), cut at ``MAX_PATH_CHARS``."""
    target = redact_path(path)
    if query:
        target += "?" + redact_query(query)
    target = logs.redact_text(target)
    if len(target) > MAX_PATH_CHARS:
        target = target[:MAX_PATH_CHARS] + "…"
    return target


@dataclass(slots=True)
class AccessRecord:
    """One request as it goes: filled in by whoever learns each part, logged once."""

    started: float = field(default_factory=time.perf_counter)
    method: str = ""  # empty until the request head was read
    path: str = ""  # already redacted (``redact_target``)
    status: int = 0  # 0: no answer was sent
    bytes_sent: int = 0
    client: str | None = None
    user_id: int | None = None


# The API request being handled, for code below the middleware that learns the user
# (``note_user``); trio copies it into the request's tasks, which share the record.
_current: ContextVar[AccessRecord | None] = ContextVar("fechatter_access", default=None)


def note_user(user_id: int) -> None:
    """Record the authenticated user on the current request's access line, if one is kept."""
    record = _current.get()
    if record is not None:
        record.user_id = user_id


class AccessLog:
    """Writes access lines for one listener; ``trusted_proxies`` as in the settings."""

    def __init__(self, listener: str, trusted_proxies: Sequence[str]) -> None:
        self.listener = listener
        self.trusted: tuple[IPNetwork, ...] = parse_networks(trusted_proxies)

    def start(self, method: str, path: str, query: str) -> AccessRecord:
        """A record for a request, current in this context (``note_user`` reaches it)."""
        record = AccessRecord(method=method[:16], path=redact_target(path, query))
        _current.set(record)
        return record

    def client(self, peer: str | None, forwarded_for: Sequence[str]) -> str | None:
        """The client's address as logged: the peer, or per ``X-Forwarded-For`` from a
        trusted proxy (``fechatter.client_address``)."""
        address = client_address(peer, forwarded_for if self.trusted else (), self.trusted)
        return str(address) if address is not None else peer

    def emit(self, record: AccessRecord) -> None:
        """Log ``record``'s line (INFO on ``fechatter.access``)."""
        duration_ms = round((time.perf_counter() - record.started) * 1000, 1)
        method, path = record.method or "-", record.path or "-"
        fields: dict[str, object] = {
            "listener": self.listener,
            "method": method,
            "path": path,
            "status": record.status,
            "duration_ms": duration_ms,
            "bytes": record.bytes_sent,
            "client": record.client,
        }
        if record.user_id is not None:
            fields["user_id"] = record.user_id
        log.info("%s %s %d", method, path, record.status, extra=fields)
