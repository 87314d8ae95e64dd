"""Fixtures of the storage contract suite: one ``storage`` per backend.

Add a backend by adding its name to ``BACKENDS`` and a branch to ``_open_backend``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import pytest

from fechatter.storage import Storage, open_storage

BACKENDS = ["sqlite", "postgres"]


def _open_backend(
    name: str, tmp_path: Path, request: pytest.FixtureRequest
) -> AbstractAsyncContextManager[Storage]:
    if name == "sqlite":
        return open_storage(f"sqlite:///{tmp_path / 'fechatter.db'}")
    if name == "postgres":
        url: str = request.getfixturevalue("pg_database")
        return open_storage(url)
    raise AssertionError(f"unknown backend {name}")  # pragma: no cover


@pytest.fixture(params=BACKENDS)
async def storage(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Storage]:
    """A freshly migrated, empty database of each backend."""
    async with _open_backend(request.param, tmp_path, request) as opened:
        yield opened
