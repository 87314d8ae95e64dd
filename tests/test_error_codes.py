"""Every error ``code`` the server can answer is in docs/api.md's error table, in the row of its
status: the table is what a client author reads, so a code added without it fails here.

The codes are found in the source (``ast``, every module of ``fechatter/``):

- ``code="…"`` keyword arguments;
- ``default_code`` of every error class: ``fechatter.errors``' and their subclasses anywhere
  (``UploadTimeout`` in http/files.py, the bus's), each with its ``status`` or its base's;
- the storage backends' ``_CONFLICTS`` tables (constraint → code, raised as 409 through a
  variable);
- module constants named ``CODE``.

Where the call is an error class (``NotFound(…, code=…)``, ``errors.NotFound(…)``,
``Invalid.field(…)``), the row must be that class's status.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Raised but never answered to a client, each with why:
INTERNAL = {
    # errors.CodecError: the cluster nodes' wire format, a 500 a node logs (never answered).
    "cluster_codec_error",
    # The bus's request errors: cluster/router.py turns them into a retry or a 503 of its own.
    "bus_no_responders",
    "bus_timeout",
    # domain/chats.py answers the existing direct chat instead (SPEC: a Single chat is unique).
    "single_exists",
    # A node's registration at start (cluster/node.py): an operator's one-line error.
    "node_id_taken",
}
CONFLICT = 409


def _modules() -> list[ast.Module]:
    return [ast.parse(p.read_text(), str(p)) for p in sorted((ROOT / "fechatter").rglob("*.py"))]


def _error_classes(modules: list[ast.Module]) -> dict[str, tuple[int, str | None]]:
    """class name -> (status, default_code) for ``FechatterError`` and every subclass found,
    through any chain of bases (names are unique across the package)."""
    defs: dict[str, ast.ClassDef] = {}
    for module in modules:
        for node in ast.walk(module):
            if isinstance(node, ast.ClassDef):
                defs[node.name] = node

    def own(node: ast.ClassDef, attribute: str) -> object:
        for statement in node.body:
            targets = (
                statement.targets
                if isinstance(statement, ast.Assign)
                else [statement.target]
                if isinstance(statement, ast.AnnAssign) and statement.value is not None
                else []
            )
            value = getattr(statement, "value", None)
            named = any(isinstance(t, ast.Name) and t.id == attribute for t in targets)
            if named and isinstance(value, ast.Constant):
                return value.value
        return None

    found: dict[str, tuple[int, str | None]] = {}
    changed = True
    while changed:  # a fixed point: a class is known once one of its bases is
        changed = False
        for name, node in defs.items():
            if name in found:
                continue
            bases = [
                b.id if isinstance(b, ast.Name) else getattr(b, "attr", "") for b in node.bases
            ]
            inherited = next((found[b] for b in bases if b in found), None)
            if name == "FechatterError":
                inherited = (500, None)
            if inherited is None:
                continue
            status = own(node, "status")
            code = own(node, "default_code")
            found[name] = (
                status if isinstance(status, int) else inherited[0],
                code if isinstance(code, str) else None,
            )
            changed = True
    return found


def _raised() -> dict[str, set[int | None]]:
    """code -> the statuses it is raised with (None: not through an error class, e.g. a
    RateLimiter's ``code=`` or throttle.CODE)."""
    modules = _modules()
    classes = _error_classes(modules)
    found: dict[str, set[int | None]] = {}
    for class_status, default_code in classes.values():
        if default_code is not None:
            found.setdefault(default_code, set()).add(class_status)
    for module in modules:
        for node in ast.walk(module):
            if isinstance(node, ast.Call):
                func = node.func
                name = ""
                if isinstance(func, ast.Name):
                    name = func.id
                elif isinstance(func, ast.Attribute):
                    # errors.NotFound(...) names the class; Invalid.field(...) its value.
                    if func.attr in classes:
                        name = func.attr
                    elif isinstance(func.value, ast.Name):
                        name = func.value.id
                status = classes[name][0] if name in classes else None
                for keyword in node.keywords:
                    value = keyword.value
                    if (
                        keyword.arg == "code"
                        and isinstance(value, ast.Constant)
                        and isinstance(value.value, str)
                    ):
                        found.setdefault(value.value, set()).add(status)
            elif isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id in ("CODE", "_CONFLICTS") for t in node.targets
            ):
                target = next(t.id for t in node.targets if isinstance(t, ast.Name))
                if target == "CODE" and isinstance(node.value, ast.Constant):
                    found.setdefault(str(node.value.value), set()).add(None)
                elif target == "_CONFLICTS":
                    for code in _conflict_codes(node.value):
                        found.setdefault(code, set()).add(CONFLICT)
    return found


def _conflict_codes(table: ast.expr) -> list[str]:
    """The codes of a ``_CONFLICTS`` table: ``{constraint: (code, detail)}`` (PostgreSQL) or
    ``((constraint, code, detail), …)`` (SQLite)."""
    if isinstance(table, ast.Dict):
        rows = [v for v in table.values if isinstance(v, ast.Tuple)]
        return [str(ast.literal_eval(row.elts[0])) for row in rows]
    assert isinstance(table, ast.Tuple), ast.dump(table)
    return [str(ast.literal_eval(row.elts[1])) for row in table.elts if isinstance(row, ast.Tuple)]


def _documented() -> dict[str, set[int]]:
    """code -> the statuses of the table rows that list it."""
    text = (ROOT / "docs" / "api.md").read_text()
    table = text[text.index("| status | `code` values | when |") :]
    table = table[: table.index("\n\n")]
    rows: dict[str, set[int]] = {}
    for line in table.splitlines()[2:]:
        cells = line.split("|")
        status = int(re.match(r"\s*(\d{3})", cells[1]).group(1))  # type: ignore[union-attr]
        for code in re.findall(r"`([a-z_]+)`", cells[2]):
            rows.setdefault(code, set()).add(status)
    return rows


def test_the_source_is_read() -> None:
    raised = _raised()
    # A few of each kind the scan must see (were the scan broken, the next test would pass).
    assert raised["chat_not_found"] == {404}
    assert 422 in raised["empty_file"]  # Invalid.field(..., code=...)
    assert raised["headers_too_large"] == {431}  # a default_code of fechatter.errors
    assert raised["upload_timeout"] == {408}  # a default_code of a subclass elsewhere
    assert raised["bus_timeout"] == {503}  # through Unavailable
    assert raised["email_taken"] == {409}  # a _CONFLICTS table
    assert None in raised["too_many_attempts"]  # throttle.CODE
    assert len(raised) > 70


def test_every_code_is_in_the_error_table_in_its_status_row() -> None:
    documented = _documented()
    raised = _raised()
    missing = sorted(set(raised) - set(documented) - INTERNAL)
    assert missing == [], f"codes raised but not in docs/api.md's error table: {missing}"
    wrong = {
        code: (sorted(s for s in statuses if s is not None), sorted(documented[code]))
        for code, statuses in raised.items()
        if code not in INTERNAL and not {s for s in statuses if s is not None} <= documented[code]
    }
    assert wrong == {}, f"code: (raised with, documented under): {wrong}"
    stale = sorted(INTERNAL - set(raised))
    assert stale == [], f"INTERNAL names codes nothing raises any more: {stale}"
