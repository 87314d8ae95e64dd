"""JSON Schemas (draft 2020-12) of the realtime contract, shipped with the package.

Layout (docs/api.md "Realtime streams", "Schemas"):

- ``frame.json``: every server WebSocket text frame, ``{id?, event, data?}``;
- ``events/<event>.json``: the ``data`` of each event both transports carry (SSE ``data:``
  line, WebSocket frame ``data``);
- ``replies/<event>.json``: the ``data`` of the WebSocket-only answers ``pong``, ``ack``,
  ``error``;
- ``ops/<op>.json``: each client → server frame;
- ``defs.json``: Message, Chat, User, Workspace, Problem, … shared by the others.

Each file's ``$id`` is under ``BASE`` (an ``.invalid`` host: an identifier, never fetched);
references between files are relative. This module only reads the files; validating is the
caller's (the tests use ``jsonschema``, a dev dependency). It must never import a transport.
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

BASE = "https://fechatter.invalid/realtime/"
FOLDERS = ("events", "replies", "ops")


def load() -> dict[str, dict[str, Any]]:
    """Every schema file by its path relative to this folder (``"events/typing.json"``).

    Raises ``ValueError`` if a file's ``$id`` is not ``BASE`` + its path (a copied file
    that kept another's id would shadow it).
    """
    root = resources.files(__name__)
    found: dict[str, dict[str, Any]] = {}
    paths = ["defs.json", "frame.json"]
    for folder in FOLDERS:
        paths += sorted(
            f"{folder}/{entry.name}"
            for entry in root.joinpath(folder).iterdir()
            if entry.name.endswith(".json")
        )
    for path in paths:
        schema = json.loads(root.joinpath(path).read_text(encoding="utf-8"))
        if schema.get("$id") != BASE + path:
            raise ValueError(f"{path}: $id must be {BASE + path}, not {schema.get('$id')!r}")
        found[path] = schema
    return found


def names(folder: str) -> set[str]:
    """The event, reply or op names one folder has schemas for (file names minus ``.json``)."""
    if folder not in FOLDERS:
        raise ValueError(f"folder must be one of {FOLDERS}")
    root = resources.files(__name__).joinpath(folder)
    return {e.name.removesuffix(".json") for e in root.iterdir() if e.name.endswith(".json")}
