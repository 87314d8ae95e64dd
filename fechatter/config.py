"""Server configuration: defaults < app.yaml (``$FECHATTER_CONFIG``) < ``FECHATTER_*`` < flags.

This module only describes and loads settings; it must never open sockets or databases. The
JWT secret, when not configured, is generated once and kept next to the database (mode 0600)
so tokens survive restarts: see ``resolve_jwt_secret``.
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import re
import secrets
import socket
from collections.abc import Mapping
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

DEFAULT_CONFIG_FILE = "app.yaml"
# HS256 wants a key at least as long as its 256-bit output (RFC 7518 §3.2).
MIN_JWT_SECRET_CHARS = 32
# A node id names a process in logs, /api/sse/health and (later) NATS subjects and leases.
NODE_ID_PATTERN = re.compile(r"[A-Za-z0-9._-]{1,64}")
WILDCARD_HOSTS = frozenset({"0.0.0.0", "::", ""})
# A NATS subject token prefix, as nats_prefix (docs/cluster.md §6): dot-separated names.
NATS_PREFIX_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,32}(\.[A-Za-z0-9_-]{1,32}){0,3}")
NATS_SCHEMES = ("nats", "tls", "ws", "wss")
NodeRole = Literal["all", "api", "realtime"]
MAX_WORKERS = 256  # --workers: far above any host's cores; a typo (--workers 4000) is refused
# FECHATTER_* names that are not settings but are read by something else: the config file's
# path, the project's tools (scripts/, tests/) and deploy/nginx.conf's template variables
# (compose.yaml gives them to nginx; an env file shared with the server may hold them too).
OTHER_ENVIRONMENT = frozenset(
    {
        "FECHATTER_CONFIG",
        "FECHATTER_VENV",
        "FECHATTER_TEST_BACKEND",
        "FECHATTER_CHROMIUM",
        "FECHATTER_FUZZ_COLLECT",
        "FECHATTER_SERVER_NAME",
        "FECHATTER_LISTEN",
        "FECHATTER_HTTP_LISTEN",
        "FECHATTER_NGINX_ACCESS_LOG",
        "FECHATTER_TLS_CERT",
        "FECHATTER_TLS_KEY",
    }
)
_NGINX_UPSTREAM_VARIABLE = re.compile(r"FECHATTER_NODE\d+_(API|STREAMS)")
# The YAML file named on the command line, seen by Settings' source hook while loading.
_config_file: ContextVar[str | None] = ContextVar("fechatter_config_file", default=None)


class Settings(BaseSettings):
    """Every knob of a Fechatter server, with SPEC §5 defaults."""

    model_config = SettingsConfigDict(env_prefix="FECHATTER_", extra="forbid", frozen=True)

    host: str = "127.0.0.1"
    port: int = Field(6688, ge=0, le=65535)
    realtime_port: int = Field(6687, ge=0, le=65535)
    database_url: str = "sqlite:///fechatter.db"
    database_pool_size: int | None = Field(
        None,
        ge=1,
        description="PostgreSQL connections of this process; None: 20, capped to what the"
        " server has free (docs/storage.md)",
    )
    allowed_origins: list[str] = Field(default_factory=list)
    public_realtime_url: str | None = Field(
        None, description="the realtime listener as browsers reach it (behind a proxy)"
    )
    public_url: str | None = Field(
        None,
        pattern=r"^https?://[^/?#\s]+(/[^?#\s]*)?$",
        description="the web app as people reach it, e.g. https://chat.example.com; invite"
        " links are <public_url>/invite/<token>. None: the origin each request reached"
        " (the API's own origin; set it behind a proxy)",
    )

    jwt_secret: str | None = Field(
        None,
        description=f"HS256 key, at least {MIN_JWT_SECRET_CHARS} characters; unset or empty:"
        " generated once and kept next to the database (resolve_jwt_secret)",
    )
    node_id: str | None = Field(
        None,
        description="this process's name among the nodes, 1-64 of [A-Za-z0-9._-]; None:"
        " <hostname>-<worker index>-<boot epoch> (default_node_id)",
    )
    nats_url: str | None = Field(
        None,
        description="cluster mode (docs/cluster.md): nats://host:4222, several comma-separated"
        " for a NATS cluster, user:password@ in the URL; None: one process, no NATS",
    )
    role: NodeRole = Field(
        "all",
        description="cluster node role: all (API + streams), api (API, owns chats), realtime"
        " (streams only, owns no chat)",
    )
    workers: int | None = Field(
        None,
        ge=1,
        le=MAX_WORKERS,
        description="run this many cluster nodes on this host sharing its ports (a parent"
        " process supervising them; fechatter.workers); None: this process serves",
    )
    worker_index: int | None = Field(
        None,
        ge=0,
        lt=MAX_WORKERS,
        description="internal, set by the --workers parent on each child: its index (node"
        " name <name>-w<index>), SO_REUSEPORT listeners, stdin watched for the parent's end",
    )
    nats_prefix: str = Field(
        "fechatter", description="first token(s) of every subject, so deployments can share NATS"
    )
    nats_creds: Path | None = Field(None, description="NATS .creds file (user JWT + NKey seed)")
    nats_tls_ca: Path | None = Field(None, description="CA bundle to verify the NATS server")
    nats_tls_cert: Path | None = Field(None, description="client certificate for NATS (mTLS)")
    nats_tls_key: Path | None = Field(None, description="its private key (with nats_tls_cert)")
    access_token_ttl: int = Field(3600, gt=0, description="seconds")
    refresh_token_ttl: int = Field(14 * 24 * 3600, gt=0, description="seconds")
    argon2_time_cost: int = Field(3, ge=1)
    argon2_memory_cost: int = Field(65536, ge=8, description="KiB")
    argon2_parallelism: int = Field(4, ge=1)
    hash_threads: int = Field(2, ge=1, description="concurrent Argon2 computations")
    hash_queue_max: int | None = Field(
        None, ge=0, description="callers waiting for a hash thread, then 503; None: 4 x threads"
    )
    access_log: bool = Field(
        False,
        description="one INFO line per request on both listeners, secrets redacted"
        " (fechatter/access_log.py)",
    )
    trusted_proxies: list[str] = Field(
        default_factory=list,
        description="IPs/CIDRs whose X-Forwarded-For names the client; empty: XFF ignored",
    )
    signin_account_burst: int = Field(10, ge=1, description="failed sign-ins per email, then 429")
    signin_account_interval: float = Field(60.0, gt=0, description="seconds per regained try")
    auth_address_burst: int = Field(
        30, ge=1, description="failed sign-ins + refreshes per client address, then 429"
    )
    auth_address_interval: float = Field(2.0, gt=0, description="seconds per regained try")
    signup_address_burst: int = Field(100, ge=1, description="sign-ups per client address")
    signup_address_interval: float = Field(6.0, gt=0, description="seconds per regained sign-up")
    throttle_max_keys: int = Field(100_000, ge=1, description="entries per throttle table")

    max_body_bytes: int = Field(1024 * 1024, gt=0)
    read_on_seconds: float = Field(
        5.0,
        gt=0,
        description="seconds an early answer's unread body (<= max_body_bytes) is read on after"
        " the answer, before the response ends (fechatter/http/drain.py READ_ON_SECONDS)",
    )
    max_content_chars: int = Field(4000, gt=0)
    max_files: int = Field(10, ge=0)
    max_members_per_request: int = Field(1000, gt=0)
    # The one per-user write limit (SPEC §6): sends, edits, deletions and reactions share it.
    send_rate: float = Field(
        20.0, gt=0, description="writes (sends, edits, deletions, reactions) per second per user"
    )
    send_burst: int = Field(40, gt=0)
    max_reactions_per_message: int = Field(
        50, gt=0, description="distinct emoji on one message; a new one past it is a 422"
    )

    # Files (SPEC §8, docs/api.md "Files"): the upload route's own limits, not the JSON ones.
    files_dir: Path | None = Field(
        None,
        description="where blobs live; None: files/ next to the SQLite database (./files for"
        " PostgreSQL). A cluster's nodes must share it (docs/cluster.md)",
    )
    max_file_bytes: int = Field(20 * 1024 * 1024, gt=0, description="one upload, bytes; 413")
    upload_timeout: float = Field(120.0, gt=0, description="seconds for one upload body; 408")
    upload_rate: float = Field(0.5, gt=0, description="uploads per second per user (sustained)")
    upload_burst: int = Field(20, gt=0, description="uploads in a burst per user; then 429")
    upload_quota_bytes: int = Field(
        1024 * 1024 * 1024, gt=0, description="stored bytes of one user's uploads; then 413"
    )
    file_url_ttl: int = Field(600, gt=0, le=3600, description="signed file URLs live, seconds")
    max_image_pixels: int = Field(
        40_000_000, gt=0, description="larger images are refused (decompression bombs); 422"
    )
    image_threads: int = Field(2, ge=1, description="concurrent image decodes / thumbnails")
    file_gc_interval: float = Field(3600.0, gt=0, description="seconds between GC passes")
    file_gc_grace: float = Field(
        24 * 3600.0, gt=0, description="an unreferenced upload is kept this long, seconds"
    )

    chat_mailbox_size: int = Field(256, gt=0)
    group_commit_max: int = Field(256, gt=0, description="sends committed together, at most")
    chat_idle_seconds: float = Field(300.0, gt=0)
    actor_restart_budget: int = Field(5, ge=0, description="restarts per restart window")
    actor_restart_window: float = Field(60.0, gt=0)
    actor_call_timeout: float = Field(10.0, gt=0)
    typing_ttl: float = Field(10.0, gt=0)
    shutdown_grace: float = Field(10.0, gt=0)
    backlog: int = Field(4096, gt=0)

    heartbeat_interval: float = Field(15.0, gt=0, description="SSE ': ping' / WS ping period")
    ws_dead_after: float = Field(45.0, gt=0, description="close a silent WebSocket after this")
    ws_max_message: int = Field(65536, gt=0, description="characters per client frame")
    max_connections: int = Field(50000, gt=0, description="realtime streams; then 503")
    max_streams_per_user: int = Field(20, gt=0, description="realtime streams per user; then 429")
    # A stream request is one small head a real client sends within a round trip; 5 s leaves
    # room for a slow mobile link, and is all a silent connection can hold a slot for.
    head_timeout: float = Field(
        5.0, gt=0, description="seconds a realtime connection has to present a valid token"
    )
    # A reconnect storm (every client of a restarted server at once) is accepted faster than
    # the connection tasks read the heads, so the whole storm is pending for a moment: the
    # budget must hold it (the bench's 5,000-stream fan-out failed at 1,000). Past it the
    # oldest pending connection is dropped.
    max_pending_connections: int = Field(
        10000, gt=0, description="realtime connections not yet authenticated"
    )
    tcp_user_timeout_ms: int = Field(30000, ge=0, description="0 leaves the kernel default")
    stream_sndbuf: int | None = Field(None, gt=0, description="SO_SNDBUF of stream sockets")
    stream_max_events: int = Field(256, gt=0, description="outbox bound, events")
    stream_max_bytes: int = Field(1024 * 1024, gt=0, description="outbox bound, bytes")
    stream_write_timeout: float = Field(30.0, gt=0, description="a stalled stream is closed")
    ring_size: int = Field(1000, gt=0, description="replay ring per user, events")
    resume_window: float = Field(300.0, gt=0, description="a user's ring outlives streams by")
    presence_grace: float = Field(5.0, ge=0, description="offline after the last stream + this")
    presence_max_chat_size: int = Field(
        100, ge=2, description="presence is pushed only within chats this small"
    )
    keep_alive_timeout: float = Field(5.0, gt=0)
    log_format: Literal["auto", "json", "text"] = Field(
        "auto", description="json or text; auto: text on a terminal, json otherwise"
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO",
        description="the root logger's level; per-request lines come only from access_log",
    )
    security_poll_interval: float = Field(
        2.0, gt=0, description="seconds between reads of the security change log"
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        path = _config_file.get() or os.environ.get("FECHATTER_CONFIG", DEFAULT_CONFIG_FILE)
        yaml_source = YamlConfigSettingsSource(settings_cls, yaml_file=path)
        return (init_settings, env_settings, yaml_source)

    @model_validator(mode="after")
    def _argon2_memory_fits_lanes(self) -> Settings:
        if self.argon2_memory_cost < 8 * self.argon2_parallelism:
            raise ValueError("argon2_memory_cost must be at least 8 KiB per argon2_parallelism")
        return self

    @model_validator(mode="after")
    def _cluster_mode_is_complete(self) -> Settings:
        # Checked here so every entry point (CLI, yaml, env, tests) refuses the same way; the
        # message starts with the setting to change (cli._one_line prints it as one line).
        nats_only = [
            name
            for name in ("nats_creds", "nats_tls_ca", "nats_tls_cert", "nats_tls_key")
            if getattr(self, name) is not None
        ]
        postgres = self.database_url.startswith(("postgresql://", "postgres://"))
        if self.workers is not None and not postgres:
            raise ValueError(
                "workers: --workers runs several processes, which need a shared PostgreSQL"
                " database_url (postgresql://...); SQLite cannot be shared between processes"
            )
        # The --workers parent starts a local NATS server and generates the shared secret
        # when none is configured (fechatter.workers); its children get both.
        parent = self.workers is not None and self.worker_index is None
        if self.nats_url is None:
            if nats_only:
                raise ValueError(f"{nats_only[0]}: is a NATS setting; give nats_url too")
            if self.role != "all" and not parent:
                raise ValueError(f"role: {self.role!r} needs a cluster; give nats_url too")
            return self
        if not postgres:
            raise ValueError(
                "database_url: a NATS URL (cluster mode) needs a shared PostgreSQL database"
                " (postgresql://...); SQLite cannot be shared between nodes"
            )
        if not self.jwt_secret and not parent:
            raise ValueError(
                "jwt_secret: a NATS URL (cluster mode) needs FECHATTER_JWT_SECRET, the same on"
                " every node (a generated per-node secret would split sessions)"
            )
        if (self.nats_tls_cert is None) != (self.nats_tls_key is None):
            raise ValueError("nats_tls_cert: give nats_tls_cert and nats_tls_key together")
        return self

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, value: str) -> str:
        # Checked here so every command (serve, migrate, admin, backup, …) refuses a bad URL
        # with the same one line (cli._one_line) before anything is opened.
        scheme = value.partition(":")[0].lower()
        if scheme in ("postgresql", "postgres"):
            return value
        if scheme != "sqlite":
            raise ValueError(
                f"unsupported scheme {scheme!r} in {redact_url(value)!r}: expected"
                " sqlite:///path or postgresql://user@host/database"
            )
        path = value[len("sqlite:///") :] if value.startswith("sqlite:///") else ""
        if not path or path.endswith("/"):
            raise ValueError(f"expected sqlite:///path naming a file, got {value!r}")
        return value

    @field_validator("nats_url")
    @classmethod
    def _nats_urls(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        urls = [u.strip() for u in value.split(",")]
        for url in urls:
            parsed = urlsplit(url)
            if parsed.scheme not in NATS_SCHEMES or not parsed.hostname:
                raise ValueError(
                    f"expected {'|'.join(NATS_SCHEMES)}://host:port (comma-separated),"
                    f" got {redact_url(url)!r}"
                )
            try:
                parsed.port  # noqa: B018 - raises on a port that is not a number
            except ValueError:
                raise ValueError(f"bad port in {redact_url(url)!r}") from None
        return ",".join(urls)

    @field_validator("nats_prefix")
    @classmethod
    def _nats_prefix_is_subject_tokens(cls, value: str) -> str:
        if NATS_PREFIX_PATTERN.fullmatch(value) is None:
            raise ValueError(f"must be 1-4 dot-separated tokens of A-Z a-z 0-9 _ -, got {value!r}")
        return value

    @field_validator("nats_creds", "nats_tls_ca", "nats_tls_cert", "nats_tls_key")
    @classmethod
    def _nats_file_exists(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"no such file: {value}")
        return value

    @property
    def nats_servers(self) -> list[str]:
        """``nats_url`` split into the server URLs nats-py takes; empty without a cluster."""
        return self.nats_url.split(",") if self.nats_url else []

    @field_validator("jwt_secret")
    @classmethod
    def _jwt_secret_is_long_enough(cls, value: str | None) -> str | None:
        if not value:
            return None  # unset (an empty FECHATTER_JWT_SECRET too): the generated one
        # Characters, as auth.Authenticator counts them; never fewer bytes than characters.
        if len(value) < MIN_JWT_SECRET_CHARS:
            raise ValueError(
                f"must be at least {MIN_JWT_SECRET_CHARS} characters, got {len(value)}"
                " (make one with: python -c 'import secrets; print(secrets.token_urlsafe(48))')"
            )
        return value

    @field_validator("node_id")
    @classmethod
    def _node_id_is_a_name(cls, value: str | None) -> str | None:
        if value is not None and NODE_ID_PATTERN.fullmatch(value) is None:
            raise ValueError(f"must be 1-64 characters of A-Z a-z 0-9 . _ -, got {value!r}")
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _proxies_are_networks(cls, values: list[str]) -> list[str]:
        for value in values:
            try:
                ipaddress.ip_network(value.strip(), strict=False)
            except ValueError:
                raise ValueError(f"not an IP address or CIDR: {value!r}") from None
        return values

    @property
    def hash_queue_limit(self) -> int:
        """``hash_queue_max``, or four callers per hash thread when unset."""
        if self.hash_queue_max is not None:
            return self.hash_queue_max
        return 4 * self.hash_threads

    @property
    def sqlite_path(self) -> Path | None:
        """The database file for a ``sqlite:///`` URL, else None."""
        prefix = "sqlite:///"
        if self.database_url.startswith(prefix):
            return Path(self.database_url[len(prefix) :])
        return None

    @property
    def files_path(self) -> Path:
        """``files_dir``, else ``files/`` next to the SQLite database (``./files`` else)."""
        if self.files_dir is not None:
            return self.files_dir
        db = self.sqlite_path
        return (db.parent if db is not None else Path(".")) / "files"

    @property
    def binds_every_address(self) -> bool:
        """Whether ``host`` is a wildcard (``0.0.0.0`` / ``::``): no one origin names us."""
        return self.host in WILDCARD_HOSTS

    def origins(self, api_port: int) -> list[str]:
        """Browser origins allowed on the realtime listener, exactly as browsers send them.

        Configured ``allowed_origins`` (trailing ``/`` ignored), else the API listener's own
        ``http://<host>:<api_port>`` plus the loopback names on that port. Never https by
        default: the API listener speaks plain HTTP, so an https page on that port is not ours.
        """
        if self.allowed_origins:
            return [o.rstrip("/") for o in self.allowed_origins]
        names = ["localhost", "127.0.0.1", "[::1]"]
        if not self.binds_every_address:
            own = f"[{self.host}]" if ":" in self.host else self.host
            names.insert(0, own.lower())
        return list(dict.fromkeys(f"http://{name}:{api_port}" for name in names))


def load_settings(config_file: str | None = None, **overrides: Any) -> Settings:
    """Load settings; ``overrides`` (command-line flags) win over every other source.

    ``config_file`` names the YAML file (else ``$FECHATTER_CONFIG``, else ``./app.yaml``);
    a missing default file is fine, a missing named file is an error.
    """
    flags = {k: v for k, v in overrides.items() if v is not None}
    if config_file is not None:
        if not Path(config_file).is_file():
            raise FileNotFoundError(f"config file not found: {config_file}")
        token = _config_file.set(config_file)
        try:
            return Settings(**flags)
        finally:
            _config_file.reset(token)
    return Settings(**flags)


def unknown_environment(environ: Mapping[str, str]) -> list[str]:
    """One warning line per ``FECHATTER_*`` variable of ``environ`` that names no setting.

    pydantic-settings ignores such a variable, so a typo (``FECHATTER_DATABSE_URL``) would
    leave the default in force without a word; the line names the closest setting
    (``difflib.get_close_matches``, cutoff 0.8) when there is one. Names are compared
    upper-cased, as pydantic-settings reads them (case-insensitively); ``OTHER_ENVIRONMENT``
    and nginx's upstream variables are known. Returns ``[]`` when every name is known.
    """
    prefix = Settings.model_config["env_prefix"].upper()
    fields = sorted(Settings.model_fields)
    known = {f"{prefix}{name.upper()}" for name in fields} | OTHER_ENVIRONMENT
    lines = []
    for name in sorted(environ):
        upper = name.upper()
        if not upper.startswith(prefix) or upper in known:
            continue
        if _NGINX_UPSTREAM_VARIABLE.fullmatch(upper):
            continue
        # Compared without the shared prefix, which would make any two names look alike.
        bare = upper.removeprefix(prefix).lower()
        close = difflib.get_close_matches(bare, fields, n=1, cutoff=0.8)
        hint = f" (did you mean {prefix}{close[0].upper()}?)" if close else ""
        lines.append(f"environment variable {name} names no setting and is ignored{hint}")
    return lines


def default_node_id(epoch: str, worker: int = 0, hostname: str | None = None) -> str:
    """``<hostname>-<worker>-<epoch>``, always a valid node id (``NODE_ID_PATTERN``).

    ``epoch`` is the process's boot epoch (the one in its event ids), so a restarted node
    never has its previous id. Characters of the host name outside ``[A-Za-z0-9._-]`` become
    ``-`` and the host name is shortened to keep the whole within 64 characters.
    """
    host = re.sub(
        r"[^A-Za-z0-9._-]", "-", hostname if hostname is not None else socket.gethostname()
    )
    tail = f"-{worker}-{epoch}"
    return f"{host[: 64 - len(tail)] or 'node'}{tail}"


def worker_node_name(name: str | None, worker: int, hostname: str | None = None) -> str:
    """The name of ``--workers`` child ``worker`` (its node id is ``<name>.<boot>``):
    ``<name>-w<worker>`` for a configured ``node_id``, else ``<hostname>-w<worker>``, shortened
    so that the id with its boot epoch stays a valid node id (``NODE_ID_PATTERN``)."""
    base = name or re.sub(
        r"[^A-Za-z0-9._-]", "-", hostname if hostname is not None else socket.gethostname()
    )
    tail = f"-w{worker}"
    # 64 - len(".<boot>") (a 6- or 8-character boot epoch) - the tail
    return f"{base[: 64 - 9 - len(tail)] or 'node'}{tail}"


def redact_url(url: str) -> str:
    """``url`` with any password replaced by ``***`` (for messages and logs)."""
    parsed = urlsplit(url)
    if parsed.password is None:
        return url
    netloc = parsed.netloc.replace(f":{parsed.password}@", ":***@", 1)
    return parsed._replace(netloc=netloc).geturl()


def resolve_jwt_secret(settings: Settings) -> str:
    """The configured secret, else one kept in ``<db dir>/.fechatter-jwt-secret`` (0600)."""
    if settings.jwt_secret:
        return settings.jwt_secret
    db = settings.sqlite_path
    directory = db.parent if db is not None else Path(".")
    path = directory / ".fechatter-jwt-secret"
    if path.exists():
        return path.read_text().strip()
    directory.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_urlsafe(48)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secret)
    return secret
