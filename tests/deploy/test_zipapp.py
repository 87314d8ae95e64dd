"""Single-file deployment (issue 18, docs/deploy.md "Single file"): ``scripts/build-zipapp``
builds one executable file holding the server, its dependencies, the web client and the
migrations; started from an empty directory with nothing else on its path, it serves.

The build is the slow part (about 10 s here, wheels from pip's cache): it runs once for the
module. The file is started as an executable (its ``#!/usr/bin/env python3.X`` line), with
``PATH`` stripped of this test's virtualenv and no ``PYTHONPATH``, so the server that answers
is the one inside the file, not this checkout.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
import zipfile
from collections.abc import AsyncIterator
from contextlib import closing
from pathlib import Path

import httpx
import pytest
import trio

from tests.cluster.procs import NodeProc
from tests.conftest import Api, make_chat, make_workspace
from tests.realtime.clients import SseClient
from tests.serverlog import problems_in_text

pytestmark = pytest.mark.slow  # a build with pip, then a subprocess server

REPO = Path(__file__).resolve().parents[2]
BUILD_CEILING = 300.0  # seconds: pip resolving ~40 wheels (from its cache, else PyPI)
START_CEILING = 60.0  # first start unpacks the file into SHIV_ROOT, then imports the app
# The data the package must carry (pyproject's package-data): what the file must hold.
PACKAGE_DATA = ("fechatter/web", "fechatter/storage/migrations")


@pytest.fixture(scope="module")
def zipapp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``scripts/build-zipapp`` run with this test's interpreter (shiv from the dev extra)."""
    out = tmp_path_factory.mktemp("zipapp") / "fechatter.pyz"
    started = time.monotonic()
    result = subprocess.run(
        ["bash", str(REPO / "scripts" / "build-zipapp"), str(out)],
        env={**os.environ, "PYTHON": sys.executable},
        capture_output=True,
        text=True,
        timeout=BUILD_CEILING,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    print(f"zipapp built in {time.monotonic() - started:.1f} s: {result.stdout.strip()}")
    return out


def _package_files(folder: str) -> dict[str, bytes]:
    """Every file under ``folder`` of the checkout (bytecode caches aside), by its path."""
    return {
        str(p.relative_to(REPO)): p.read_bytes()
        for p in (REPO / folder).rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }


def test_the_file_holds_the_web_client_and_the_migrations(zipapp: Path) -> None:
    wanted = {k: v for folder in PACKAGE_DATA for k, v in _package_files(folder).items()}
    assert any(name.endswith(".sql") for name in wanted)
    assert "fechatter/web/index.html" in wanted
    with zipfile.ZipFile(zipapp) as archive:
        held = {
            name.removeprefix("site-packages/"): archive.read(name)
            for name in archive.namelist()
            if name.startswith("site-packages/fechatter/")
        }
    missing = sorted(set(wanted) - set(held))
    assert missing == []
    assert [name for name in wanted if held[name] != wanted[name]] == []
    # An executable for this interpreter's minor version (its wheels are cp3X ones).
    major, minor = sys.version_info[:2]
    assert zipapp.read_bytes().startswith(f"#!/usr/bin/env python{major}.{minor}\n".encode())
    assert os.access(zipapp, os.X_OK)


def vacuum_into(database: Path, backup: Path) -> None:
    """``VACUUM INTO``: a consistent copy of a live SQLite database (docs/deploy.md)."""
    with closing(sqlite3.connect(database)) as conn:
        conn.execute("VACUUM INTO ?", (str(backup),))


def message_count(database: Path) -> int:
    with closing(sqlite3.connect(database)) as conn:
        count: int = conn.execute("SELECT count(*) FROM messages").fetchone()[0]
    return count


@pytest.fixture
async def pyz_server(
    nursery: trio.Nursery, zipapp: Path, tmp_path: Path
) -> AsyncIterator[NodeProc]:
    """The file started from an empty directory: SQLite default (./fechatter.db), fresh ports,
    no configuration but cheap Argon2. SIGKILLed on the way out if the test left it running."""
    workdir = tmp_path / "empty"
    workdir.mkdir()
    venv_bin = str(Path(sys.prefix) / "bin")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FECHATTER_", "PYTHON"))}
    env.update(
        PATH=os.pathsep.join(p for p in env.get("PATH", os.defpath).split(os.pathsep)
                             if p and p != venv_bin),
        SHIV_ROOT=str(tmp_path / "shiv-root"),  # where the file unpacks (default ~/.shiv)
        FECHATTER_ARGON2_MEMORY_COST="8",
        FECHATTER_ARGON2_TIME_COST="1",
        FECHATTER_ARGON2_PARALLELISM="1",
    )  # fmt: skip
    command = [str(zipapp), "serve", "--port", "0", "--realtime-port", "0"]
    process = await trio.lowlevel.open_process(
        command, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, cwd=workdir
    )
    node = NodeProc("pyz", process, 0, 0)  # learn_ports: the ones it bound
    nursery.start_soon(node.read_stderr)
    try:
        with trio.fail_after(START_CEILING):
            await node.learn_ports()
            await node.wait_ready()
        yield node
    finally:
        with trio.CancelScope(shield=True):
            if node.running:
                node.kill()
            await node.wait()


async def test_the_file_serves_from_an_empty_directory(
    pyz_server: NodeProc, tmp_path: Path
) -> None:
    node = pyz_server
    with trio.fail_after(30):
        async with httpx.AsyncClient(base_url=node.api, timeout=10) as client:
            page = await client.get("/")
            assert page.status_code == 200
            assert page.content == (REPO / "fechatter" / "web" / "index.html").read_bytes()
            me, you = await Api(client).signup(), await Api(client).signup()
            chat = await make_chat(me, await make_workspace(me, you), "Single", you)
            stream = await SseClient.connect(node.realtime, you.api.token)
            try:
                await stream.next_of("ready")
                r = await me.api.post(f"/api/chats/{chat}/messages", json={"content": "hi"})
                assert r.status_code == 201, r.text
                event = await stream.next_of("message.created")
                assert (event.data["chat_id"], event.data["content"]) == (chat, "hi")
            finally:
                await stream.aclose()
        # The backup recipe of docs/deploy.md, while the server serves: VACUUM INTO.
        backup = tmp_path / "backup.db"
        await trio.to_thread.run_sync(vacuum_into, tmp_path / "empty" / "fechatter.db", backup)
        assert await trio.to_thread.run_sync(message_count, backup) == 1
        node.process.send_signal(signal.SIGTERM)
        assert await node.wait() == 0, node.text()
        await node.eof.wait()
    assert problems_in_text(node.text()) == [], node.text()
    # SQLite default: the database and the generated JWT secret next to it, in the empty
    # directory; the code ran from the unpacked file.
    made = {p.name for p in (tmp_path / "empty").iterdir()}
    assert {"fechatter.db", ".fechatter-jwt-secret"} <= made
    assert list((tmp_path / "shiv-root").glob("*/site-packages/fechatter/web/index.html"))
