"""Run ``python -m fechatter …`` as a subprocess, as an operator would, against a test's
database (the worktree's package: the repository root is the child's working directory)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import trio

from tests.conftest import TEST_SECRET

ROOT = Path(__file__).resolve().parents[2]
CLI_CEILING = 60.0  # seconds for one command: interpreter start, migrations, one hash


def cli_env(files_dir: Path | None = None) -> dict[str, str]:
    """The child's environment: the tests' secret and cheap Argon2 costs."""
    env = {
        **os.environ,
        "FECHATTER_JWT_SECRET": TEST_SECRET,
        "FECHATTER_ARGON2_TIME_COST": "1",
        "FECHATTER_ARGON2_MEMORY_COST": "8",
        "FECHATTER_ARGON2_PARALLELISM": "1",
        "FECHATTER_LOG_FORMAT": "text",
    }
    env.pop("FECHATTER_CONFIG", None)
    if files_dir is not None:
        env["FECHATTER_FILES_DIR"] = str(files_dir)
    return env


async def fechatter(
    *args: str, stdin: bytes = b"", files_dir: Path | None = None
) -> subprocess.CompletedProcess[bytes]:
    """``python -m fechatter *args`` to its end (stdout and stderr captured, any exit)."""
    with trio.fail_after(CLI_CEILING):
        return await trio.run_process(
            [sys.executable, "-m", "fechatter", *args],
            stdin=stdin,
            capture_stdout=True,
            capture_stderr=True,
            check=False,
            cwd=ROOT,
            env=cli_env(files_dir),
        )


def one_line_refusal(done: subprocess.CompletedProcess[bytes], prefix: str) -> str:
    """Assert a refusal: exit 1, nothing on stdout, one line on stderr starting with
    ``prefix``, no traceback; the line."""
    err = done.stderr.decode()
    assert done.returncode == 1, (done.returncode, err)
    assert done.stdout == b""
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(prefix), err
    return lines[0]
