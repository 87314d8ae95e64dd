"""Every error ``code`` the server can answer is in docs/api.md's error table, in the row of its
status: the table is what a client author reads, so a code added without it fails here.

The codes are found in the source (``ast``): ``code="…"`` keyword arguments, ``default_code``
class attributes of ``fechatter.errors`` and module constants named ``CODE``. Where the call is
one of ``fechatter.errors``' classes (``NotFound(…, code=…)``, ``Invalid.field(…)``), the row
must be that class's status.
"""

from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path

from fechatter import errors

ROOT = Path(__file__).resolve().parents[1]
# Not client-facing: the cluster nodes' wire format (errors.CodecError, a 500 that a node
# logs and never answers a client with).
INTERNAL = {"cluster_codec_error"}
STATUS_OF = {
    name: cls.status
    for name, cls in inspect.getmembers(errors, inspect.isclass)
    if issubclass(cls, errors.FechatterError)
}


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


def _raised() -> dict[str, set[int | None]]:
    """code -> the statuses of the error classes it is raised with (None: not an error class,
    e.g. a RateLimiter's ``code=``)."""
    found: dict[str, set[int | None]] = {}
    for path in sorted((ROOT / "fechatter").rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                func = node.func
                if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name):
                    name = func.value.id  # Invalid.field(...)
                else:
                    name = func.id if isinstance(func, ast.Name) else ""
                for keyword in node.keywords:
                    value = keyword.value
                    if (
                        keyword.arg == "code"
                        and isinstance(value, ast.Constant)
                        and isinstance(value.value, str)
                    ):
                        found.setdefault(value.value, set()).add(STATUS_OF.get(name))
            elif isinstance(node, ast.ClassDef) and node.name in STATUS_OF:
                for statement in node.body:
                    if (
                        isinstance(statement, ast.Assign)
                        and any(
                            isinstance(t, ast.Name) and t.id == "default_code"
                            for t in statement.targets
                        )
                        and isinstance(statement.value, ast.Constant)
                    ):
                        code = str(statement.value.value)
                        found.setdefault(code, set()).add(STATUS_OF[node.name])
            elif (
                isinstance(node, ast.Assign)
                and any(isinstance(t, ast.Name) and t.id == "CODE" for t in node.targets)
                and isinstance(node.value, ast.Constant)
            ):
                found.setdefault(str(node.value.value), set()).add(None)
    return found


def test_the_source_is_read() -> None:
    raised = _raised()
    # A few of each kind the scan must see (were the scan broken, the next test would pass).
    assert raised["chat_not_found"] == {404}
    assert 422 in raised["empty_file"]  # Invalid.field(..., code=...)
    assert raised["headers_too_large"] == {431}  # a default_code
    assert None in raised["too_many_attempts"]  # throttle.CODE
    assert len(raised) > 60


def test_every_code_is_in_the_error_table_in_its_status_row() -> None:
    documented = _documented()
    missing = sorted(set(_raised()) - set(documented) - INTERNAL)
    assert missing == [], f"codes raised but not in docs/api.md's error table: {missing}"
    wrong = {
        code: (sorted(s for s in statuses if s is not None), sorted(documented[code]))
        for code, statuses in _raised().items()
        if code not in INTERNAL and not {s for s in statuses if s is not None} <= documented[code]
    }
    assert wrong == {}, f"code: (raised with, documented under): {wrong}"
