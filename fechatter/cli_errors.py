"""One-line errors for the command line: what an operator must fix, never a traceback.

``fechatter serve`` / ``migrate`` / ``admin`` / ``backup`` / ``export`` / ``import`` share
these: a port already taken (checked before anything is opened or created: ``ports_in_use``),
a database that does not answer (``database_unreachable``: the host and the driver's reason,
never the password), and the leaves of the exception groups trio nurseries wrap errors in
(``leaves``). Bad settings are ``fechatter.cli.load_cli_settings``'s one line.
"""

from __future__ import annotations

import errno
import socket
from urllib.parse import urlsplit

from fechatter.config import Settings


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


def in_use_line(settings: Settings) -> str:
    """The one line for a taken port (stderr, exit 1)."""
    return (
        f"fechatter: cannot listen on {settings.host} port {settings.port} (API) or"
        f" {settings.realtime_port} (streams): address already in use; choose others"
        " with --port / --realtime-port"
    )


def database_unreachable(error: BaseException, database_url: str) -> str:
    """``cannot connect to the database at <host>[:port][/db]: <reason>`` for a connection
    failure (``Unavailable`` whose cause is the driver's error); the URL's password and user
    are never shown, the reason is the first line of the driver's message."""
    parts = urlsplit(database_url)
    where = parts.hostname or "the local socket"
    if parts.port is not None:
        where += f":{parts.port}"
    if parts.path.strip("/"):
        where += parts.path
    cause = error.__cause__
    reason = str(cause).strip().splitlines()[0].strip() if cause is not None else ""
    line = f"cannot connect to the database at {where}"
    return f"{line}: {reason}" if reason else line
