"""Bench harness: prepare a database, run ``fechatter serve`` as a measured subprocess.

The server gets its own core (``os.sched_setaffinity``) when the machine has two or more, and
the load generator the other; each one's CPU time is read from ``/proc``. Set-up (users,
workspace, chats, tokens) goes straight through the storage API: it is not what is measured.
"""

from __future__ import annotations

import os
import re
import secrets
import sys
import tempfile
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import trio

import fechatter
from fechatter.auth import Authenticator
from fechatter.models import ChatType, Role
from fechatter.storage import open_storage

SECRET = "bench-secret-" + "b" * 40
ALL_CORES = frozenset(os.sched_getaffinity(0))  # before any pinning: children inherit it
CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds of a process, its live children and its reaped children (``/proc``).

    For a local PostgreSQL server, ``pid`` is the postmaster: its backends are its children,
    and a backend that exits is reaped into its ``cutime``/``cstime``.
    """
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    total = sum(int(f) for f in fields[11:15]) / CLK_TCK
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or entry.name == str(pid):
            continue
        try:
            stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # exited meanwhile
        if stat[1] == str(pid):
            total += (int(stat[11]) + int(stat[12])) / CLK_TCK
    return total


def postgres_server_pid(database_url: str | None) -> int | None:
    """The postmaster's pid if ``database_url`` is a PostgreSQL server on this machine."""
    if database_url is None or not database_url.startswith(("postgresql:", "postgres:")):
        return None
    import psycopg

    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT pg_backend_pid()").fetchone()
    backend = Path(f"/proc/{row[0] if row else 0}/stat")
    if not backend.exists():
        return None  # a remote server
    return int(backend.read_text().rsplit(")", 1)[1].split()[1])


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def pin(pid: int, core: int) -> bool:
    """Pin a process to one core if the machine has at least two."""
    cores = sorted(ALL_CORES)
    if len(cores) < 2:
        return False
    os.sched_setaffinity(pid, {cores[core % len(cores)]})
    return True


@dataclass
class World:
    """What a scenario talks to: user ids with tokens, and chats with their members."""

    tokens: dict[int, str]
    chats: dict[int, list[int]] = field(default_factory=dict)
    sender: int = 0


async def prepare(database_url: str, users: int, chat_shapes: Sequence[int]) -> World:
    """``users`` users in one workspace (+1 sender/owner), and one chat per entry of
    ``chat_shapes`` with that many members taken in order from the users (wrapping)."""
    auth = Authenticator(
        SECRET,
        access_ttl=86400,
        refresh_ttl=86400,
        time_cost=1,
        memory_cost=8,
        parallelism=1,
        hash_threads=1,
    )
    run = secrets.token_hex(4)  # a shared PostgreSQL keeps earlier runs' users
    async with open_storage(database_url) as storage:
        owner, _ = await storage.create_user("sender", f"sender.{run}@bench.example", "x", None)
        ws = await storage.create_workspace(f"bench {run}", None, owner.id)
        ids = []
        for i in range(users):
            user, _ = await storage.create_user(f"u{i}", f"u{i}.{run}@bench.example", "x", None)
            await storage.add_workspace_member(ws.id, user.id, Role.MEMBER)
            ids.append(user.id)
        world = World(
            {uid: auth.issue_access_token(uid) for uid in [owner.id, *ids]}, sender=owner.id
        )
        cursor = 0
        for n, size in enumerate(chat_shapes):
            members = [ids[(cursor + k) % len(ids)] for k in range(size)]
            cursor += size
            chat = await storage.create_chat(
                ws.id, ChatType.PUBLIC_CHANNEL, f"c{n}", None, owner.id, [owner.id, *members]
            )
            world.chats[chat.id] = members
    return world


@dataclass
class Server:
    process: trio.Process
    api_url: str
    realtime_host: str
    realtime_port: int
    pinned: bool
    log_path: Path | None = None

    @property
    def pid(self) -> int:
        return self.process.pid

    def cpu(self) -> float:
        return cpu_seconds(self.pid)

    def rss(self) -> float:
        return rss_mib(self.pid)


# The checkout whose ``fechatter`` this process imported (run_server's subprocesses use it).
CHECKOUT = os.path.dirname(os.path.dirname(os.path.abspath(fechatter.__file__)))


@asynccontextmanager
async def run_server(
    database_url: str | None,
    extra_env: dict[str, str] | None = None,
    extra_args: Sequence[str] = (),
) -> AsyncIterator[tuple[Server, str]]:
    """Start ``fechatter serve`` on free ports; yields it and its database URL.

    ``extra_args`` are appended to the command line (``--nats-url``, ``--node-id``)."""
    with tempfile.TemporaryDirectory(prefix="fechatter-bench-") as tmp:
        url = database_url or f"sqlite:///{Path(tmp) / 'bench.db'}"
        env = {
            **os.environ,
            "FECHATTER_JWT_SECRET": SECRET,
            "FECHATTER_SEND_RATE": "100000",
            "FECHATTER_SEND_BURST": "100000",
            "FECHATTER_WS_DEAD_AFTER": "3600",
            **(extra_env or {}),
        }
        # The server runs the same fechatter as this process (a worktree's, not the one the
        # venv has installed): cwd is a temporary folder, so put its checkout first.
        env["PYTHONPATH"] = os.pathsep.join(p for p in (CHECKOUT, env.get("PYTHONPATH")) if p)
        log_path = Path(tmp) / "server.log"
        with log_path.open("w") as log:
            yield_url = url
            os.sched_setaffinity(0, ALL_CORES)  # a previous run pinned us; the server inherits
            process = await trio.lowlevel.open_process(
                [
                    sys.executable,
                    "-m",
                    "fechatter",
                    "serve",
                    "--port",
                    "0",
                    "--realtime-port",
                    "0",
                    "--database-url",
                    url,
                    *extra_args,
                ],
                stderr=log,
                env=env,
                cwd=tmp,
            )
            try:
                api = rt = None
                with trio.fail_after(60):
                    while not (api and rt):
                        # The log line is the server's only ready signal across processes.
                        await trio.sleep(0.05)
                        text = log_path.read_text()
                        if m := re.search(r"fechatter API on (http://\S+)", text):
                            api = m.group(1)
                        if m := re.search(r"realtime streams on http://(\S+):(\d+)", text):
                            rt = (m.group(1), int(m.group(2)))
                        if process.poll() is not None:
                            raise RuntimeError(f"server exited:\n{text}")
                pinned = pin(process.pid, 0)
                if pinned:
                    pin(os.getpid(), 1)
                yield Server(process, api, rt[0], rt[1], pinned, log_path), yield_url
            finally:
                process.terminate()
                with trio.move_on_after(30):
                    await process.wait()
                if process.returncode is None:
                    process.kill()
                    await process.wait()
