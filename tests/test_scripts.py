"""The README's start commands, exactly as written there, flags included, as real processes.

The commands are read from README.md ("Two commands" and the prose under it), so a command
the README shows is a command the suite runs. Only the environment is the test's: a
database in tmp_path, port 0 for the listeners the command does not name, cheap Argon2, and
a virtualenv that is already complete (``FECHATTER_VENV``) so ``scripts/_venv.sh`` installs
nothing. ``./scripts/test`` is not run here: it runs this suite.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import trio

from tests.serverlog import problems_in_text

REPO = Path(__file__).resolve().parent.parent


def readme_serve_commands() -> list[str]:
    """Every ``./scripts/serve ...`` command of the README's "Two commands" section."""
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Two commands", 1)[1].split("\n## ", 1)[0]
    commands: list[str] = []
    # In the code block: a line starting with the command, up to its `#` comment.
    for line in section.splitlines():
        if line.startswith("./scripts/serve"):
            commands.append(line.split("#", 1)[0].strip())
    # In the prose: `./scripts/serve ...` in backticks.
    commands += re.findall(r"`(\./scripts/serve[^`]*)`", section)
    return list(dict.fromkeys(commands))


COMMANDS = readme_serve_commands()


def test_readme_shows_the_commands_with_flags() -> None:
    # If the README is rewritten, this says which commands the suite stopped running.
    assert {"./scripts/serve --demo", "./scripts/serve --port 7000"} <= set(COMMANDS)


def _complete_venv(path: Path) -> Path:
    """A virtualenv directory that ``scripts/_venv.sh`` takes as installed and up to date.

    Its ``bin/`` links to the interpreter and the ``fechatter`` entry point running this
    suite, and its install stamp is newer than pyproject.toml: the script must not pip
    install (no network, and never into the shared environment).
    """
    bin_dir = path / "bin"
    bin_dir.mkdir(parents=True)
    (bin_dir / "python").symlink_to(sys.executable)
    (bin_dir / "fechatter").symlink_to(Path(sys.prefix) / "bin" / "fechatter")
    (path / ".fechatter-installed").touch()
    return path


@pytest.mark.slow
@pytest.mark.parametrize("command", COMMANDS)
async def test_readme_serve_command_starts_serves_and_stops(command: str, tmp_path: Path) -> None:
    argv = shlex.split(command)
    # The README's port may be taken on a shared machine; 0 lets the kernel pick a free one.
    argv = ["0" if i > 0 and argv[i - 1] == "--port" else arg for i, arg in enumerate(argv)]
    env = {
        **os.environ,
        "FECHATTER_VENV": str(_complete_venv(tmp_path / "venv")),
        # The entry point runs the code next to the script (this checkout), not whatever
        # checkout the shared virtualenv was installed from.
        "PYTHONPATH": str(REPO),
        "FECHATTER_DATABASE_URL": f"sqlite:///{tmp_path / 'readme.db'}",
        "FECHATTER_REALTIME_PORT": "0",
        "FECHATTER_ARGON2_MEMORY_COST": "8",
        "FECHATTER_ARGON2_TIME_COST": "1",
        "FECHATTER_ARGON2_PARALLELISM": "1",
    }
    if "--port" not in argv:
        env["FECHATTER_PORT"] = "0"
    process = await trio.lowlevel.open_process(argv, stderr=subprocess.PIPE, env=env, cwd=REPO)
    assert process.stderr is not None
    log = b""

    async def read_more() -> None:
        nonlocal log
        assert process.stderr is not None
        chunk = await process.stderr.receive_some()
        assert chunk, f"server exited early: {log.decode(errors='replace')}"
        log += chunk

    try:
        with trio.fail_after(60):
            # The server logs its bound address once it is listening: the readiness signal.
            while (match := re.search(rb"fechatter API on (http://\S+)", log)) is None:
                await read_more()
            url = match.group(1).decode()
            async with httpx.AsyncClient(base_url=url, timeout=10) as client:
                assert (await client.get("/ready")).status_code == 200
                if "--demo" in argv:
                    r = await client.post(
                        "/api/auth/signin",
                        json={"email": "alice@demo.fechatter", "password": "fechatter-demo"},
                    )
                    assert r.status_code == 200, r.text
                    headers = {"Authorization": f"Bearer {r.json()['token']}"}
                    r = await client.get("/api/chats", headers=headers)
                    assert r.status_code == 200
                    assert len(r.json()) == 4
                if "--port" in argv:
                    # The flag (not the environment, not the default 6688) chose the port.
                    assert not url.endswith(":6688")
            process.send_signal(signal.SIGINT)
            while chunk := await process.stderr.receive_some():
                log += chunk
            assert await process.wait() == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        await process.stderr.aclose()
    text = log.decode(errors="replace")
    assert problems_in_text(text) == [], text
