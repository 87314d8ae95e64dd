"""One-line errors for the command line: what an operator must fix, never a traceback.

``fechatter serve`` / ``migrate`` / ``admin`` / ``backup`` / ``export`` / ``import`` share
these: a port already taken (checked before anything is opened or created: ``ports_in_use``),
a database that cannot be opened (``database_unreachable``: the host and the driver's reason,
never the password; a SQLite file by its path) or that fails once open (``database_error``:
never "cannot connect" then), a SQLite file that does not exist (``missing_sqlite_file``:
opening it would create an empty database), and the leaves of the exception groups trio
nurseries wrap errors in (``leaves``). Bad settings are
``fechatter.cli.load_cli_settings``'s one line.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Sequence
from urllib.parse import urlsplit

from fechatter.config import Settings
from fechatter.errors import DatabaseUnreachable, Unavailable
from fechatter.storage import sqlite_path


def leaves(error: BaseException) -> list[BaseException]:
    """The non-group exceptions inside ``error`` (itself when it is no group), in order."""
    if not isinstance(error, BaseExceptionGroup):
        return [error]
    found: list[BaseException] = []
    for inner in error.exceptions:
        found += leaves(inner)
    return found


def address_in_use(error: BaseException) -> bool:
    """Whether every leaf of ``error`` is an ``OSError`` ``EADDRINUSE`` (a port taken)."""
    return all(
        isinstance(leaf, OSError) and leaf.errno == errno.EADDRINUSE for leaf in leaves(error)
    )


def _taken(host: str, port: int) -> bool:
    """Whether binding ``host:port`` fails with ``EADDRINUSE`` now (a listener holds it).
    Anything else (an unresolvable host, no permission) is left to the server's own start."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except OSError:
        return False
    for family, kind, proto, _, address in infos:
        with socket.socket(family, kind, proto) as probe:
            # As the listeners do: a port left in TIME_WAIT by a stopped server is free.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(address)
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    return True
    return False


def ports_in_use(settings: Settings) -> list[str]:
    """The listeners (``"API"``, ``"streams"``) whose configured port is taken now — checked
    before the server opens its database, so a taken port creates no files. Port 0 (any
    free port) is never taken; a listener the node's ``role`` does not run is not checked.
    A port taken between this check and the listen is still reported by the server's start
    (``address_in_use``)."""
    wanted = []
    if settings.role in ("all", "api"):
        wanted.append(("API", settings.port))
    if settings.role in ("all", "realtime"):
        wanted.append(("streams", settings.realtime_port))
    return [name for name, port in wanted if port and _taken(settings.host, port)]


def in_use_line(settings: Settings, taken: Sequence[str] = ("API", "streams")) -> str:
    """The one line for a taken port (stderr, exit 1), naming the listeners of ``taken``
    (``ports_in_use``'s names) and the flag that moves each: ``fechatter: cannot listen on
    <host> port <port> (streams): address already in use; choose another with
    --realtime-port``. The default names both (a port taken after the check: which one the
    listen failed on is not known)."""
    flags = {
        "API": ("--port", settings.port),
        "streams": ("--realtime-port", settings.realtime_port),
    }
    ports = " or ".join(f"{flags[name][1]} ({name})" for name in taken)
    moves = " / ".join(flags[name][0] for name in taken)
    other = "another" if len(taken) == 1 else "others"
    return (
        f"fechatter: cannot listen on {settings.host} port {ports}: address already in use;"
        f" choose {other} with {moves}"
    )


def _reason(error: BaseException) -> str:
    """The first line of the driver's message behind ``error`` (its ``__cause__``), or ""."""
    cause = error.__cause__
    text = str(cause).strip() if cause is not None else ""
    return text.splitlines()[0].strip() if text else ""


def database_unreachable(error: BaseException, database_url: str) -> str:
    """The line for a database that could not be opened (``DatabaseUnreachable``, its cause
    the driver's error): ``cannot connect to the database at <host>[:port][/db]: <reason>``
    (PostgreSQL; the URL's password and user are never shown) or ``cannot open the SQLite
    database <path>: <reason>`` (a file, no server); the reason is the first line of the
    driver's message."""
    reason = _reason(error)
    if database_url.partition(":")[0].lower() == "sqlite":
        line = f"cannot open the SQLite database {sqlite_path(database_url)}"
        return f"{line}: {reason}" if reason else line
    parts = urlsplit(database_url)
    where = parts.hostname or "the local socket"
    if parts.port is not None:
        where += f":{parts.port}"
    if parts.path.strip("/"):
        where += parts.path
    line = f"cannot connect to the database at {where}"
    return f"{line}: {reason}" if reason else line


def database_error(error: Unavailable, database_url: str) -> str:
    """The one line for a database failure of a command: ``database_unreachable``'s for a
    database that could not be opened (``DatabaseUnreachable`` only), else what failed once
    it was open — the error's own detail (``the database ended the snapshot: …``, ``the
    database did not answer in time``, an export's snapshot limit) and, when the detail is
    the generic ``storage unavailable``, the driver's reason after it."""
    if isinstance(error, DatabaseUnreachable):
        return database_unreachable(error, database_url)
    reason = _reason(error)
    if reason and reason not in error.detail:
        return f"the database failed: {error.detail}: {reason}"
    return error.detail


def missing_sqlite_file(settings: Settings) -> str | None:
    """The refusal for a SQLite database file that does not exist (opening it would create
    an empty database: a typo in the path must not look like an empty server), or None."""
    path = settings.sqlite_path
    if path is not None and not path.exists():
        return f"no database at {path} (--database-url / --config)"
    return None
