"""Whole-server lifecycle: graceful shutdown keeps acknowledged messages; the CLI starts,
serves and stops on SIGTERM."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
import trio

from fechatter.app import ServerInfo, serve
from fechatter.config import Settings
from tests.conftest import Api, User, make_chat, make_settings, make_workspace
from tests.realtime.clients import RawWs, SseClient
from tests.serverlog import problems_in_text


# httpx leaves an async generator unfinalised when the server drops a connection mid-request.
@pytest.mark.filterwarnings(
    "ignore:Exception ignored in. <async_generator object ByteStream"
    ":pytest.PytestUnraisableExceptionWarning"
)
async def test_shutdown_with_sends_in_flight_loses_no_acknowledged_message(
    settings_factory: Callable[..., Settings],
) -> None:
    settings = settings_factory()
    acked: list[int] = []
    enough = trio.Event()
    with trio.fail_after(60):
        async with trio.open_nursery() as server_nursery:
            shutdown = trio.Event()
            info: ServerInfo = await server_nursery.start(serve, settings, shutdown)
            async with httpx.AsyncClient(base_url=info.api_url, timeout=10) as client:
                api = Api(client)
                users = [await api.signup() for _ in range(5)]
                ws = await make_workspace(users[0], *users[1:])
                chat = await make_chat(users[0], ws, "Group", *users[1:])

                async def sender(user: User) -> None:
                    for i in range(35):
                        try:
                            r = await user.api.post(
                                f"/api/chats/{chat}/messages", json={"content": f"{i}"}
                            )
                        except httpx.HTTPError:
                            return  # the server went away: this send was not acknowledged
                        if r.status_code != 201:
                            return
                        acked.append(r.json()["id"])
                        if len(acked) >= 40:
                            enough.set()

                async with trio.open_nursery() as senders:
                    for user in users:
                        senders.start_soon(sender, user)
                    await enough.wait()
                    shutdown.set()
        assert len(acked) >= 40

        # Start again on the same database: everything acknowledged is there, seq gapless.
        async with trio.open_nursery() as server_nursery:
            shutdown = trio.Event()
            info = await server_nursery.start(serve, settings, shutdown)
            async with httpx.AsyncClient(base_url=info.api_url, timeout=10) as client:
                r = await client.post(
                    "/api/auth/signin",
                    json={"email": users[0].email, "password": "correct horse"},
                )
                headers = {"Authorization": f"Bearer {r.json()['token']}"}
                r = await client.get(f"/api/chats/{chat}/messages?limit=200", headers=headers)
                stored = r.json()["items"]
            shutdown.set()
    assert set(acked) <= {m["id"] for m in stored}
    assert sorted(m["seq"] for m in stored) == list(range(1, len(stored) + 1))


async def test_one_process_shutdown_closes_streams_going_away_without_a_retry_hint(
    tmp_path: Path,
) -> None:
    """One process keeps its shutdown close (docs/api.md "Graceful stop"): WebSocket 1001
    "server shutting down", SSE just ends — the cluster's reconnect hint (1012, ``retry:``)
    is for a node whose chats another node serves at once."""
    settings = make_settings(tmp_path)  # one process, whatever the suite mode
    with trio.fail_after(30):
        async with trio.open_nursery() as server_nursery:
            shutdown = trio.Event()
            info: ServerInfo = await server_nursery.start(serve, settings, shutdown)
            async with httpx.AsyncClient(base_url=info.api_url, timeout=10) as client:
                user = await Api(client).signup()
            sse = await SseClient.connect(info.realtime_url, user.api.token)
            ws = await RawWs.connect(info.realtime_url, user.api.token)
            try:
                assert (await sse.next_event()).event == "ready"
                assert (await ws.next_message())["event"] == "ready"
                shutdown.set()
                assert await sse.read_to_eof() == b""
                assert sse.retry is None
                assert await ws.until_closed() == []
                assert ws.closed is not None
                assert (ws.closed.code, ws.closed.reason) == (1001, "server shutting down")
            finally:
                await sse.aclose()
                await ws.aclose()


CHECKOUT = str(Path(__file__).resolve().parent.parent)


def _serve_command(tmp_path: Path, *flags: str) -> list[str]:
    """``fechatter serve`` on a free API port and a database in ``tmp_path``, plus ``flags``."""
    database = f"sqlite:///{tmp_path / 'cli.db'}"
    base = [sys.executable, "-m", "fechatter", "serve", "--port", "0", "--database-url", database]
    return [*base, *flags]


async def test_cli_serves_and_stops_on_sigterm(tmp_path: Path) -> None:
    """The README's start command (``fechatter serve --demo``), as a real process."""
    command = _serve_command(tmp_path, "--demo")
    env = {
        **os.environ,
        "FECHATTER_ARGON2_MEMORY_COST": "8",
        "FECHATTER_ARGON2_TIME_COST": "1",
        "FECHATTER_ARGON2_PARALLELISM": "1",
    }
    process = await trio.lowlevel.open_process(
        command, stderr=subprocess.PIPE, env=env, cwd=tmp_path
    )
    assert process.stderr is not None
    try:
        with trio.fail_after(30):
            log = b""
            while (match := re.search(rb"fechatter API on (http://\S+)", log)) is None:
                chunk = await process.stderr.receive_some()
                assert chunk, f"server exited early: {log.decode(errors='replace')}"
                log += chunk
            url = match.group(1).decode()
            async with httpx.AsyncClient(base_url=url) as client:
                assert (await client.get("/ready")).status_code == 200
                api = Api(client)
                a, b = await api.signup(), await api.signup()
                ws = await make_workspace(a, b)
                chat = await make_chat(a, ws, "Single", b)
                r = await a.api.post(f"/api/chats/{chat}/messages", json={"content": "hi"})
                assert r.status_code == 201
                r = await b.api.get(f"/api/chats/{chat}/messages")
                assert [m["content"] for m in r.json()["items"]] == ["hi"]
                # The demo people can sign in and find their seeded conversations.
                r = await client.post(
                    "/api/auth/signin",
                    json={"email": "alice@demo.fechatter", "password": "fechatter-demo"},
                )
                assert r.status_code == 200
                token = r.json()["token"]
                r = await client.get("/api/chats", headers={"Authorization": f"Bearer {token}"})
                assert len(r.json()) == 4
            process.send_signal(signal.SIGTERM)

            async def drain() -> None:
                nonlocal log
                assert process.stderr is not None
                while chunk := await process.stderr.receive_some():
                    log += chunk

            async with trio.open_nursery() as n:
                n.start_soon(drain)
                assert await process.wait() == 0
        assert problems_in_text(log.decode(errors="replace")) == []
        # The serving process froze its start-up objects (cli.tune_gc_after_start).
        frozen = re.search(rb"garbage collector: (\d+) start-up objects frozen", log)
        assert frozen is not None
        assert int(frozen.group(1)) > 10_000
        # The JWT secret was generated next to the database, owner-only.
        secret = tmp_path / ".fechatter-jwt-secret"
        assert secret.stat().st_mode & 0o777 == 0o600
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        await process.stderr.aclose()


async def test_cli_says_which_port_is_taken_without_a_traceback(tmp_path: Path) -> None:
    """A port in use is the operator's to fix: one clear line and exit 1, no traceback."""
    taken = trio.socket.socket()
    await taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    command = _serve_command(tmp_path, "--realtime-port", str(port))
    try:
        with trio.fail_after(30):
            result = await trio.run_process(command, capture_stderr=True, check=False, cwd=tmp_path)
    finally:
        taken.close()
    err = result.stderr.decode(errors="replace")
    assert result.returncode == 1
    assert f"{port} (streams): address already in use" in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("env", "flags", "named"),
    [
        ({"FECHATTER_JWT_SECRET": "a-secret-of-31-characters-xxxxx"}, (), "jwt_secret"),
        ({}, ("--node-id", "node one"), "node_id"),
        ({"FECHATTER_NODE_ID": "n" * 65}, (), "node_id"),
    ],
)
async def test_cli_refuses_bad_cluster_settings_in_one_line(
    tmp_path: Path, env: dict[str, str], flags: tuple[str, ...], named: str
) -> None:
    """A short shared JWT secret or a malformed node id stops the start: exit 2, one line
    naming the setting, no traceback, and the secret itself is not echoed."""
    command = _serve_command(tmp_path, *flags)
    # This checkout's code, not whichever checkout the virtualenv was installed from.
    env = {**os.environ, "PYTHONPATH": CHECKOUT, **env}
    with trio.fail_after(30):
        result = await trio.run_process(
            command, capture_stderr=True, check=False, cwd=tmp_path, env=env
        )
    err = result.stderr.decode(errors="replace")
    assert result.returncode == 2, err
    assert err.startswith(f"fechatter: bad configuration: {named}: ")
    assert err.count("\n") == 1
    assert "Traceback" not in err
    assert "a-secret-of-31" not in err
