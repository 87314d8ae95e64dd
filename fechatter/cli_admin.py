"""``fechatter admin …``: user and workspace administration on the configured database.

The commands run the admin use cases (``fechatter.domain.admin``) over ``open_storage`` —
no HTTP, no running server needed, SQLite or PostgreSQL alike; a running server learns of
suspensions and password changes through the security change log. Output is a plain table
(``--json``: one JSON document on stdout, for scripts). Bad input — an unknown email or
workspace, an invalid field — is one line on stderr, ``fechatter admin: …``, and exit 1
(argparse's own usage errors: exit 2); never a traceback.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

import pydantic
import trio

from fechatter.cli_errors import database_error, missing_sqlite_file
from fechatter.config import Settings
from fechatter.domain.admin import Admin
from fechatter.domain.password_resets import DEFAULT_EXPIRES_IN
from fechatter.errors import FechatterError, Unavailable
from fechatter.logs import LOG_FORMATS
from fechatter.models import Role, UserStatus
from fechatter.schemas import Email, FullName, NewEmail, Password
from fechatter.storage import open_storage

AUDIT_LIMIT = 100  # rows ``admin audit`` shows by default
# A reset link lives at most a week (seconds): long enough to reach someone on holiday, short
# enough that a forgotten link in a mailbox dies (invites: 30 days, they grant less).
MAX_EXPIRES_IN = 7 * 86_400
PROG = "fechatter admin"


class CommandError(Exception):
    """A refusal to report on one line (exit 1)."""


def common_options() -> argparse.ArgumentParser:
    """A parent parser with ``serve``'s --config / --database-url / --log-format."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", help="YAML config file (default ./app.yaml if present)")
    common.add_argument("--database-url", help="sqlite:///path (default sqlite:///fechatter.db)")
    common.add_argument("--log-format", choices=LOG_FORMATS, help="log lines as json or text")
    return common


def register(sub: Any) -> None:
    """Add ``admin`` and its actions to ``sub`` (the top-level subparsers); each action takes
    the common options (after the action's name: ``admin suspend EMAIL --config app.yaml``)."""
    common = common_options()
    admin = sub.add_parser("admin", help="administer users and workspaces")
    cmds = admin.add_subparsers(dest="admin_command", required=True, metavar="ACTION")
    out = argparse.ArgumentParser(add_help=False)
    out.add_argument("--json", action="store_true", help="print JSON instead of a table")

    def add(name: str, text: str) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = cmds.add_parser(
            name, help=text, description=text, parents=[common, out]
        )
        return parser

    p = add("create-user", "create an active user (a reset link unless --password-stdin)")
    p.add_argument("email")
    p.add_argument("fullname")
    p.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    p.add_argument(
        "--expires-in",
        type=int,
        default=DEFAULT_EXPIRES_IN,
        help="link lifetime in seconds, 1 to 604800 (7 days; default 86400)",
    )
    p = add("reset-password", "print a one-time link to set a new password, or set one")
    p.add_argument("email")
    p.add_argument("--password-stdin", action="store_true", help="set this password now")
    p.add_argument(
        "--expires-in",
        type=int,
        default=DEFAULT_EXPIRES_IN,
        help="link lifetime in seconds, 1 to 604800 (7 days; default 86400)",
    )
    add("suspend", "suspend a user: sign-in refused, sessions and streams end").add_argument(
        "email"
    )
    add("reactivate", "let a suspended user sign in again").add_argument("email")
    add("workspaces", "list every workspace")
    add("members", "list a workspace's members").add_argument("workspace_id", type=int)
    p = add("set-role", "make a workspace member an admin or a member")
    p.add_argument("workspace_id", type=int)
    p.add_argument("email")
    p.add_argument("role", choices=("admin", "member"))
    p = add("audit", "list the audit log of admin actions, newest first")
    p.add_argument("--limit", type=int, default=AUDIT_LIMIT, help=f"rows (default {AUDIT_LIMIT})")


def actor() -> str:
    """``cli:<os user>`` (the uid when the account has no name, as in some containers)."""
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return f"cli:uid-{os.getuid()}"


def _valid(kind: Any, field: str, value: str) -> str:
    try:
        checked: str = pydantic.TypeAdapter(kind).validate_python(value)
    except pydantic.ValidationError as exc:
        message = exc.errors(include_url=False)[0]["msg"].removeprefix("Value error, ")
        raise CommandError(f"{field}: {message}") from None
    return checked


def _password_stdin() -> str:
    line = sys.stdin.readline().rstrip("\r\n")
    return _valid(Password, "password", line)


def _positive(field: str, value: int, most: int = 2**31) -> int:
    if not 1 <= value <= most:
        raise CommandError(f"{field}: must be 1 to {most}")
    return value


def _table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    cells = [[str(h) for h in headers], *[["" if c is None else str(c) for c in r] for r in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells
    )


async def _run(args: argparse.Namespace, settings: Settings) -> tuple[Any, str]:
    """The command's JSON result and its human rendering."""
    from fechatter.app import build_authenticator  # the server's hasher, its costs

    cmd = args.admin_command
    rows: list[tuple[object, ...]]
    async with open_storage(settings.database_url, pool_size=2) as storage:
        base_url = settings.public_url or f"http://{settings.host}:{settings.port}"
        auth = build_authenticator(settings)
        admin = Admin(
            storage,
            auth.hash_password,
            actor=actor(),
            base_url=base_url,
            outbox=settings.nats_url is not None,
        )
        if cmd == "create-user":
            email = _valid(NewEmail, "email", args.email)
            fullname = _valid(FullName, "fullname", args.fullname)
            password = _password_stdin() if args.password_stdin else None
            expires_in = _positive("expires-in", args.expires_in, MAX_EXPIRES_IN)
            user, link = await admin.create_user(fullname, email, password, expires_in=expires_in)
            data = {"user": user.to_json(), "reset_link": None}
            text = f"created user {user.id} {user.email}"
            if link is not None:
                data["reset_link"] = {"url": link.url, "expires_at": link.expires_at}
                text += f"\nset-password link (once, until {link.expires_at}):\n{link.url}"
            return data, text
        if cmd == "reset-password":
            email = _valid(Email, "email", args.email)
            if args.password_stdin:
                user = await admin.set_password(email, _password_stdin())
                text = f"password set for {user.email}; every session of theirs ended"
                return {"user": user.to_json(), "password_set": True}, text
            expires_in = _positive("expires-in", args.expires_in, MAX_EXPIRES_IN)
            link = await admin.reset_link(email, expires_in=expires_in)
            text = f"set-password link for {email} (once, until {link.expires_at}):\n{link.url}"
            return {"url": link.url, "expires_at": link.expires_at}, text
        if cmd in ("suspend", "reactivate"):
            email = _valid(Email, "email", args.email)
            status = UserStatus.SUSPENDED if cmd == "suspend" else UserStatus.ACTIVE
            changed = await admin.set_status(email, status)
            word = "suspended" if cmd == "suspend" else "active"
            text = f"{email} is {word}" + ("" if changed else " already; nothing changed")
            return {"email": email, "status": status.value, "changed": changed}, text
        if cmd == "workspaces":
            found = await admin.workspaces()
            rows = [(s.workspace.id, s.workspace.name, s.owner_email, s.members) for s in found]
            text = _table(("id", "name", "owner", "members"), rows)
            return [s.to_json() for s in found], text
        if cmd == "members":
            members = await admin.members(_positive("workspace_id", args.workspace_id))
            # The stored account status as it is (Active, Suspended, …).
            rows = [
                (m.user.id, m.user.email, m.user.fullname, m.user.status.value, m.role.value)
                for m in members
            ]
            text = _table(("user_id", "email", "fullname", "status", "role"), rows)
            return [m.to_json() for m in members], text
        if cmd == "set-role":
            email = _valid(Email, "email", args.email)
            ws = _positive("workspace_id", args.workspace_id)
            changed = await admin.set_role(ws, email, Role(args.role))
            text = f"{email} is {args.role} of workspace {ws}"
            text += "" if changed else " already; nothing changed"
            return {"workspace_id": ws, "email": email, "role": args.role, "changed": changed}, text
        if cmd == "audit":
            entries = await admin.audit_log(_positive("limit", args.limit))
            rows = [
                (e.id, e.at, e.actor, e.action, e.target, json.dumps(e.details, sort_keys=True))
                for e in entries
            ]
            text = _table(("id", "at", "actor", "action", "target", "details"), rows)
            return [e.to_json() for e in entries], text
    raise AssertionError(f"unknown admin command {cmd!r}")  # pragma: no cover - argparse


def first_error(group: BaseExceptionGroup[Any]) -> BaseException:
    """The first leaf of an exception group (trio nurseries wrap what crosses them)."""
    first: BaseException = group
    while isinstance(first, BaseExceptionGroup):
        first = first.exceptions[0]
    return first


def existing_database(settings: Settings) -> None:
    """``CommandError`` for a SQLite file that does not exist (opening would create an
    empty database: a typo in the path must not look like an empty server)."""
    missing = missing_sqlite_file(settings)
    if missing is not None:
        raise CommandError(missing)


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Run ``fechatter admin <action>``; the exit status (0, or 1 with one line on stderr)."""
    refusal: BaseException | None = None
    try:
        existing_database(settings)
        data, text = trio.run(_run, args, settings)
    except* (CommandError, FechatterError) as group:
        refusal = first_error(group)
    if isinstance(refusal, Unavailable):
        # Where and why (never the password); "cannot connect" only for a failed connect.
        refusal = CommandError(database_error(refusal, settings.database_url))
    if refusal is not None:
        print(f"{PROG}: {refusal}", file=sys.stderr)
        return 1
    print(json.dumps(data, ensure_ascii=False, indent=2) if args.json else text)
    return 0
