"""Configuration precedence: defaults < YAML < environment < flags; the JWT secret file."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pydantic
import pytest

from fechatter.config import (
    NODE_ID_PATTERN,
    Settings,
    default_node_id,
    load_settings,
    redact_url,
    resolve_jwt_secret,
    unknown_environment,
)
from fechatter.http.drain import READ_ON_SECONDS


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
    assert Settings().read_on_seconds == READ_ON_SECONDS  # default: the documented 5 s


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


def test_jwt_secret_shorter_than_32_characters_is_rejected(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with pytest.raises(pydantic.ValidationError, match="at least 32 characters, got 31"):
        Settings(jwt_secret="s" * 31)
    monkeypatch.setenv("FECHATTER_JWT_SECRET", "too-short")
    with pytest.raises(pydantic.ValidationError, match="jwt_secret"):
        load_settings()
    monkeypatch.setenv("FECHATTER_JWT_SECRET", "e" * 32)
    assert load_settings().jwt_secret == "e" * 32
    # Empty is unset: the single-process default (a generated, stored secret) stays.
    monkeypatch.setenv("FECHATTER_JWT_SECRET", "")
    assert load_settings().jwt_secret is None


def test_node_id_is_validated(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().node_id is None
    assert Settings(node_id="a").node_id == "a"
    assert Settings(node_id="Node-1.eu_west").node_id == "Node-1.eu_west"
    assert Settings(node_id="n" * 64).node_id == "n" * 64
    for bad in ("", "n" * 65, "a b", "node/1", "nöde", "a\n"):
        with pytest.raises(pydantic.ValidationError, match="node_id"):
            Settings(node_id=bad)
    monkeypatch.setenv("FECHATTER_NODE_ID", "from-env")
    assert load_settings().node_id == "from-env"
    assert load_settings(node_id="from-flag").node_id == "from-flag"


def test_default_node_id_is_always_valid() -> None:
    assert default_node_id("1a2b3c4d", 0, "chat-host.lan") == "chat-host.lan-0-1a2b3c4d"
    assert default_node_id("1a2b3c4d", 3, "chat-host") == "chat-host-3-1a2b3c4d"
    # Characters outside the pattern become "-", a long host name is shortened.
    assert default_node_id("e", 0, "héllo wörld") == "h-llo-w-rld-0-e"
    long_id = default_node_id("1a2b3c4d", 12, "h" * 300)
    assert len(long_id) == 64
    assert long_id.endswith("-12-1a2b3c4d")
    assert default_node_id("e", 0, "") == "node-0-e"
    for made in (long_id, default_node_id("1a2b3c4d")):
        assert NODE_ID_PATTERN.fullmatch(made)


PG_URL = "postgresql://u:p@db:5432/fechatter"
SECRET = "s" * 40


def test_cluster_settings_default_to_one_process() -> None:
    settings = Settings()
    assert settings.nats_url is None
    assert settings.role == "all"
    assert settings.nats_prefix == "fechatter"
    assert settings.nats_servers == []


def test_nats_url_needs_postgres_and_a_shared_jwt_secret() -> None:
    with pytest.raises(pydantic.ValidationError, match="database_url: a NATS URL"):
        Settings(nats_url="nats://127.0.0.1:4222", jwt_secret=SECRET)
    with pytest.raises(pydantic.ValidationError, match="jwt_secret: a NATS URL"):
        Settings(nats_url="nats://127.0.0.1:4222", database_url=PG_URL)
    settings = Settings(
        nats_url=" nats://a:4222, tls://user:pw@b:4222 ",
        database_url=PG_URL,
        jwt_secret=SECRET,
        role="realtime",
        nats_prefix="acme.chat",
    )
    assert settings.nats_servers == ["nats://a:4222", "tls://user:pw@b:4222"]
    assert settings.role == "realtime"


def test_nats_settings_are_validated(tmp_path: Path) -> None:
    cluster: dict[str, Any] = {"database_url": PG_URL, "jwt_secret": SECRET}
    for bad in ("127.0.0.1:4222", "http://a:4222", "nats://", "nats://a:port"):
        with pytest.raises(pydantic.ValidationError, match="nats_url"):
            Settings(nats_url=bad, **cluster)
    with pytest.raises(pydantic.ValidationError) as raised:
        Settings(nats_url="nats://user:hunter2@a:x", **cluster)
    assert "hunter2" not in str(raised.value.errors()[0]["msg"])
    for prefix in ("", "a b", "a.>", "a..b", "*", "a.b.c.d.e"):
        with pytest.raises(pydantic.ValidationError, match="nats_prefix"):
            Settings(nats_prefix=prefix)
    with pytest.raises(pydantic.ValidationError, match="nats_creds"):
        Settings(nats_url="nats://a:4222", nats_creds=tmp_path / "missing.creds", **cluster)
    cert = tmp_path / "client.pem"
    cert.write_text("x")
    with pytest.raises(pydantic.ValidationError, match="nats_tls_cert and nats_tls_key"):
        Settings(nats_url="nats://a:4222", nats_tls_cert=cert, **cluster)
    # NATS-only settings and non-default roles make no sense without a NATS URL.
    with pytest.raises(pydantic.ValidationError, match="nats_tls_cert: is a NATS setting"):
        Settings(nats_tls_cert=cert, nats_tls_key=cert)
    with pytest.raises(pydantic.ValidationError, match="role: 'api' needs a cluster"):
        Settings(role="api")
    with pytest.raises(pydantic.ValidationError, match="role"):
        Settings(role="worker", **cluster)


def test_redact_url_hides_only_the_password() -> None:
    assert redact_url("nats://u:secret@h:4222") == "nats://u:***@h:4222"
    assert redact_url("nats://h:4222") == "nats://h:4222"


def test_unknown_environment_names_only_what_no_setting_reads() -> None:
    environ = {
        "FECHATTER_PORT": "1",  # a setting
        "fechatter_log_level": "DEBUG",  # a setting, read case-insensitively
        "FECHATTER_CONFIG": "app.yaml",  # the config file's path
        "FECHATTER_NODE2_API": "10.0.0.2:6688",  # deploy/nginx.conf's
        "FECHATTER_REALTIME_PROT": "1",  # a typo
        "FECHATTER_COLOUR": "blue",  # nothing like a setting
        "HOME": "/root",
    }
    assert unknown_environment(environ) == [
        "environment variable FECHATTER_COLOUR names no setting and is ignored",
        "environment variable FECHATTER_REALTIME_PROT names no setting and is ignored"
        " (did you mean FECHATTER_REALTIME_PORT?)",
    ]


def test_every_fechatter_variable_the_project_sets_is_known() -> None:
    # The names the tools, CI, the container files and deploy/ use (an operator's env file
    # may hold any of them): none may draw the unknown-variable warning.
    root = Path(__file__).resolve().parents[1]
    sources = [root / "compose.yaml", root / "Dockerfile", root / "docs" / "deploy.md"]
    for folder in ("deploy", "scripts", ".ci"):
        sources += [p for p in (root / folder).rglob("*") if p.is_file()]
    names = {
        name
        for path in sources
        for name in re.findall(r"FECHATTER_[A-Z0-9_]*[A-Z0-9]", path.read_text(errors="replace"))
    }
    assert {"FECHATTER_TLS_CERT", "FECHATTER_DATABASE_URL", "FECHATTER_VENV"} <= names
    assert unknown_environment(dict.fromkeys(names, "x")) == []
