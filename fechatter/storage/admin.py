"""Admin operations (issue 17): the audit log, password-reset links, every workspace.

Both backends. ``audit`` is meant to be composed (``yield from``) into the operation of the
action it records, so both commit in one transaction (``fechatter.domain.admin``). A reset
link is found by the SHA-256 of its token (never stored); a user has at most one live link
(``revoke_resets`` spends the others on a new link, a password or a status change);
``consume_reset`` spends it with a
conditional ``UPDATE … WHERE used_at IS NULL AND expires_at > now`` so two concurrent uses of
one link cannot both succeed (SQLite's one writer, PostgreSQL's row lock + re-check).
Operations never open, commit or roll back anything.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from fechatter.models import Workspace
from fechatter.storage.rows import WORKSPACE_COLUMNS, as_time, to_workspace
from fechatter.storage.sql import Op, Row, Sql, first, q

_AUDIT = Sql(
    "INSERT INTO admin_audit (at, actor, action, target, details) VALUES (?, ?, ?, ?, ?)"
    " RETURNING id"
)
_LIST_AUDIT = Sql(
    "SELECT id, at, actor, action, target, details FROM admin_audit ORDER BY id DESC LIMIT ?"
)
_INSERT_RESET = Sql(
    "INSERT INTO password_resets (user_id, token_hash, expires_at, created_at) VALUES (?, ?, ?, ?)"
)
_RESET_USER = Sql(
    "SELECT user_id FROM password_resets"
    " WHERE token_hash = ? AND used_at IS NULL AND expires_at > ?"
)
_CONSUME_RESET = Sql(
    "UPDATE password_resets SET used_at = ?"
    " WHERE token_hash = ? AND used_at IS NULL AND expires_at > ? RETURNING user_id"
)
# Every live link of a user spent at once (a new link, a password or status change).
_REVOKE_RESETS = Sql("UPDATE password_resets SET used_at = ? WHERE user_id = ? AND used_at IS NULL")
_ALL_WORKSPACES = Sql(
    f"SELECT {WORKSPACE_COLUMNS}, u.email AS owner_email,"
    " (SELECT COUNT(*) FROM workspace_members wm WHERE wm.workspace_id = w.id) AS members"
    " FROM workspaces w JOIN users u ON u.id = w.owner_id ORDER BY w.id"
)
_SCHEMA_VERSIONS = Sql("SELECT version FROM schema_migrations ORDER BY version")


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One admin action: ``at`` RFC 3339 UTC, ``actor`` ``cli:<os user>``, ``action`` a
    command name (``suspend``, …), ``target`` ``user:<email>`` or ``workspace:<id>``,
    ``details`` a JSON object."""

    id: int
    at: str
    actor: str
    action: str
    target: str
    details: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "at": self.at,
            "actor": self.actor,
            "action": self.action,
            "target": self.target,
            "details": self.details,
        }


@dataclass(frozen=True, slots=True)
class WorkspaceSummary:
    """A workspace as ``fechatter admin workspaces`` lists it."""

    workspace: Workspace
    owner_email: str
    members: int

    def to_json(self) -> dict[str, Any]:
        return {
            **self.workspace.to_json(),
            "owner_email": self.owner_email,
            "members": self.members,
        }


def _entry(row: Row) -> AuditEntry:
    return AuditEntry(
        id=int(row["id"]),
        at=as_time(row["at"]),
        actor=row["actor"],
        action=row["action"],
        target=row["target"],
        details=json.loads(row["details"]),
    )


def audit(actor: str, action: str, target: str, details: dict[str, Any], now: str) -> Op[int]:
    """Append one audit row (in the caller's transaction); its id."""
    text = json.dumps(details, ensure_ascii=False, sort_keys=True)
    row = first((yield q(_AUDIT, (now, actor, action, target, text))))
    assert row is not None  # RETURNING of an INSERT
    return int(row["id"])


def list_audit(limit: int) -> Op[list[AuditEntry]]:
    """The newest ``limit`` audit rows, newest first."""
    result = yield q(_LIST_AUDIT, (limit,))
    return [_entry(r) for r in result.rows]


def create_reset(user_id: int, token_hash: str, expires_at: str, now: str) -> Op[None]:
    """Store a reset link's token hash (``expires_at`` RFC 3339 UTC)."""
    yield q(_INSERT_RESET, (user_id, token_hash, expires_at, now))


def reset_user(token_hash: str, now: str) -> Op[int | None]:
    """The user of a live (unused, unexpired at ``now``) reset link, else None."""
    row = first((yield q(_RESET_USER, (token_hash, now))))
    return None if row is None else int(row["user_id"])


def consume_reset(token_hash: str, now: str) -> Op[int | None]:
    """Spend a live reset link: its user id, or None (unknown, used or expired)."""
    row = first((yield q(_CONSUME_RESET, (now, token_hash, now))))
    return None if row is None else int(row["user_id"])


def revoke_resets(user_id: int, now: str) -> Op[None]:
    """Mark every unused reset link of the user used at ``now`` (in the caller's
    transaction): called when a new link is made and whenever the password or the status
    changes (``storage.accounts.update_user`` / ``set_user_status``), so only the newest
    link of an unchanged account ever works."""
    yield q(_REVOKE_RESETS, (now, user_id))


def all_workspaces() -> Op[list[WorkspaceSummary]]:
    """Every workspace with its owner's email and member count, by id."""
    result = yield q(_ALL_WORKSPACES)
    return [
        WorkspaceSummary(to_workspace(r), r["owner_email"], int(r["members"])) for r in result.rows
    ]


def schema_versions() -> Op[list[int]]:
    """The migration versions recorded as applied, ascending."""
    result = yield q(_SCHEMA_VERSIONS)
    return [int(r["version"]) for r in result.rows]
