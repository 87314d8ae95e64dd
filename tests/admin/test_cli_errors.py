"""Operator mistakes are one line on stderr and an exit status, never a traceback: a database
URL of an unknown scheme or a missing ``--config`` file (every command, ``export``/``import``
included: the shared settings loader refuses it, exit 2), a PostgreSQL server
that does not answer (where and why, no password), a port already taken (before any file is
created), a truncated backup archive (tests/admin/test_backup.py)."""

from __future__ import annotations

import errno
import socket
from pathlib import Path

import pytest
import trio

from fechatter import cli_errors
from fechatter.cli import main
from fechatter.config import Settings
from tests.admin.cli import fechatter, one_line_refusal

COMMANDS = (
    ["serve", "--port", "0", "--realtime-port", "0"],
    ["demo", "--port", "0", "--realtime-port", "0"],
    ["migrate"],
    ["admin", "workspaces"],
    ["backup", "x.tar"],
    ["restore", "x.tar"],
    ["export", "--workspace", "1", "x.zip"],
    ["import", "x.zip"],
)


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c[0])
@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("mysql://root:hunter2@db/x", "unsupported scheme 'mysql' in 'mysql://root:***@db/x'"),
        ("sqlite://relative.db", "expected sqlite:///path naming a file"),
        ("sqlite:///", "expected sqlite:///path naming a file"),
    ],
)
def test_a_bad_database_url_is_one_line_and_exit_2(
    capsys: pytest.CaptureFixture[str], command: list[str], url: str, problem: str
) -> None:
    assert main([*command, "--database-url", url]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.count("\n") == 1, err
    assert err.startswith(f"fechatter: bad configuration: database_url: {problem}"), err
    assert "hunter2" not in err


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c[0])
def test_a_missing_config_file_is_one_line_and_exit_2(
    capsys: pytest.CaptureFixture[str], command: list[str], tmp_path: Path
) -> None:
    missing = tmp_path / "nowhere.yaml"
    assert main([*command, "--config", str(missing)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err == f"fechatter: bad configuration: config file not found: {missing}\n"


@pytest.mark.parametrize(
    ("command", "prefix"),
    [
        (["admin", "workspaces"], "fechatter admin: "),
        (["migrate"], "fechatter migrate: "),
        (["serve", "--port", "0", "--realtime-port", "0"], "fechatter: "),
        (["export", "--workspace", "1", "x.zip"], "fechatter export: "),
    ],
    ids=["admin", "migrate", "serve", "export"],
)
async def test_an_unreachable_postgresql_names_host_and_reason(
    command: list[str], prefix: str
) -> None:
    # Port 1 on loopback: nothing listens, the connection is refused at once.
    url = "postgresql://someone:s3cret-pw@127.0.0.1:1/fechatter"
    done = await fechatter(*command, "--database-url", url)
    line = one_line_refusal(
        done, f"{prefix}cannot connect to the database at 127.0.0.1:1/fechatter: "
    )
    assert "refused" in line.lower(), line
    assert "s3cret-pw" not in line
    assert "someone" not in line


@pytest.mark.parametrize("taken", ["--port", "--realtime-port"])
async def test_a_taken_port_is_one_line_and_creates_no_files(tmp_path: Path, taken: str) -> None:
    holder = trio.socket.socket()
    with holder:
        await holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        ports = {"--port": "0", "--realtime-port": "0", taken: str(port)}
        done = await fechatter(
            "serve",
            *[x for kv in ports.items() for x in kv],
            "--database-url",
            f"sqlite:///{tmp_path / 'db' / 'f.db'}",
        )
    line = one_line_refusal(done, "fechatter: cannot listen on 127.0.0.1 port ")
    # Only the taken listener and the flag that moves it (the other port, 0, is free).
    listener = "API" if taken == "--port" else "streams"
    assert line == (
        f"fechatter: cannot listen on 127.0.0.1 port {port} ({listener}): address already in"
        f" use; choose another with {taken}"
    )
    assert not (tmp_path / "db").exists()


def test_address_in_use_looks_through_nested_groups() -> None:
    taken = OSError(errno.EADDRINUSE, "Address already in use")
    nested = ExceptionGroup("outer", [ExceptionGroup("inner", [taken])])
    assert cli_errors.address_in_use(nested)
    other = ExceptionGroup("outer", [ExceptionGroup("inner", [taken, OSError(errno.EACCES, "x")])])
    assert not cli_errors.address_in_use(other)
    assert cli_errors.leaves(nested) == [taken]


def test_a_free_port_is_not_reported_taken() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        free = probe.getsockname()[1]
    settings = Settings(database_url="sqlite:///x.db", port=free, realtime_port=0)
    assert cli_errors.ports_in_use(settings) == []


@pytest.mark.parametrize(
    ("command", "prefix"),
    [
        (["export", "--workspace", "1", "x.zip"], "fechatter export: "),
        (["admin", "workspaces"], "fechatter admin: "),
        (["migrate"], "fechatter migrate: "),
    ],
    ids=["export", "admin", "migrate"],
)
def test_a_file_that_is_no_sqlite_database_is_named_as_a_file(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, command: list[str], prefix: str
) -> None:
    """A file, not a server: no "cannot connect to the database at the local socket…"."""
    bad = tmp_path / "README.md"
    bad.write_text("# Not a database\n" * 200)
    assert main([*command, "--database-url", f"sqlite:///{bad}"]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err == f"{prefix}cannot open the SQLite database {bad}: file is not a database\n"


def test_an_export_from_a_missing_sqlite_file_creates_nothing(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """A mistyped path is refused as ``admin`` refuses it, not opened as a new empty
    database (whose export would then say "no workspace")."""
    missing = tmp_path / "typo.db"
    out_file = tmp_path / "x.zip"
    url = f"sqlite:///{missing}"
    assert main(["export", "--workspace", "1", str(out_file), "--database-url", url]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err == f"fechatter export: no database at {missing} (--database-url / --config)\n"
    assert not missing.exists()
    assert not out_file.exists()


def test_a_misspelt_environment_variable_is_named_with_the_setting_it_resembles(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # pydantic-settings ignores it: without the warning the default database would be used
    # with no word of the typo.
    monkeypatch.setenv("FECHATTER_DATABSE_URL", "postgresql://db/prod")
    monkeypatch.setenv("FECHATTER_SERVER_NAME", "chat.example.com")  # nginx's, known
    url = f"sqlite:///{tmp_path / 'x.db'}"
    assert main(["migrate", "--database-url", url]) == 0
    err = capsys.readouterr().err
    warning = (
        "environment variable FECHATTER_DATABSE_URL names no setting and is ignored"
        " (did you mean FECHATTER_DATABASE_URL?)"
    )
    assert warning in err
    assert "SERVER_NAME" not in err
