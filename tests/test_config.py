"""Configuration precedence: defaults < YAML < environment < flags; the JWT secret file."""

from __future__ import annotations

from pathlib import Path

import pydantic
import pytest

from fechatter.config import Settings, load_settings, resolve_jwt_secret


def test_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "app.yaml"
    config.write_text("port: 7000\nhost: 0.0.0.0\nsend_burst: 7\n")
    monkeypatch.setenv("FECHATTER_PORT", "7100")
    settings = load_settings(str(config), port=None, database_url="sqlite:///x.db")
    assert settings.host == "0.0.0.0"  # from YAML
    assert settings.send_burst == 7  # from YAML
    assert settings.port == 7100  # env beats YAML
    assert settings.database_url == "sqlite:///x.db"  # flag
    assert load_settings(str(config), port=7200).port == 7200  # flag beats env
    assert Settings().max_body_bytes == 1024 * 1024  # default


def test_missing_named_config_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        load_settings(str(tmp_path / "nope.yaml"))


def test_unknown_keys_and_bad_values_are_rejected(tmp_path: Path) -> None:
    config = tmp_path / "app.yaml"
    config.write_text("prot: 1\n")
    with pytest.raises(pydantic.ValidationError):
        load_settings(str(config))
    with pytest.raises(pydantic.ValidationError):
        Settings(argon2_memory_cost=8, argon2_parallelism=4)


def test_jwt_secret_generated_once_with_owner_only_mode(tmp_path: Path) -> None:
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'data' / 'f.db'}")
    first = resolve_jwt_secret(settings)
    path = tmp_path / "data" / ".fechatter-jwt-secret"
    assert path.stat().st_mode & 0o777 == 0o600
    assert resolve_jwt_secret(settings) == first
    assert len(first) >= 32
    assert resolve_jwt_secret(Settings(jwt_secret="y" * 40)) == "y" * 40


def test_default_origins_are_the_api_listener_and_loopback_names() -> None:
    loopback = {"http://localhost:6688", "http://127.0.0.1:6688", "http://[::1]:6688"}
    assert set(Settings().origins(6688)) == loopback
    assert set(Settings(host="chat.lan").origins(6688)) == {"http://chat.lan:6688", *loopback}
    assert set(Settings(host="::1").origins(6688)) == loopback
    for wildcard in ("0.0.0.0", "::"):
        settings = Settings(host=wildcard)
        assert settings.binds_every_address
        assert set(settings.origins(6688)) == loopback
    configured = Settings(host="0.0.0.0", allowed_origins=["https://chat.example.com/"])
    assert configured.origins(6688) == ["https://chat.example.com"]
