"""The seam between the storage operations and the two backends: statements, results, ops.

An *operation* (``Op[T]``) is a generator that ``yield``s statements (``Stmt``) and is sent
back each one's ``Result``; its return value is the operation's result. It never touches a
connection, so it has no colour: ``sqlite.py`` drives it synchronously on its writer or reader
thread, ``postgres.py`` drives it with ``await`` on trio. Sub-operations compose with
``yield from``. Shapes::

    def get_user(user_id: int) -> Op[User | None]:
        row = first((yield q(GET_USER, (user_id,))))
        return to_user(row) if row else None

Statements are written once, in the *neutral* dialect: PostgreSQL-flavoured SQL with ``?``
positional and ``:name`` named placeholders. ``Sql`` rewrites it for each backend once, when
the module defines it (``lru_cache`` for text built at run time):

- PostgreSQL: ``?`` → ``%s``, ``:name`` → ``%(name)s``, ``%`` → ``%%``;
- SQLite: ``= ANY(?)`` → ``IN (SELECT value FROM json_each(?))`` and `` FOR UPDATE`` dropped
  (one writer connection serialises every write already).

Where the dialects really differ, ``Sql.split(sqlite=…, postgres=…)`` names one statement per
backend (both still in the neutral placeholder style).

Parameters: a ``list`` or ``tuple`` parameter is an array. PostgreSQL binds it as one; SQLite
binds it as compact JSON text (``json_each`` reads it; a ``files`` column stores it).
Rows come back as mappings by column name (``sqlite3.Row`` or psycopg's ``dict_row``).
"""

from __future__ import annotations

import re
from collections.abc import Generator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Literal, TypeVar

T = TypeVar("T")

Dialect = Literal["sqlite", "postgres"]
Row = Mapping[str, Any]
Params = Sequence[Any] | Mapping[str, Any]

_NAMED = re.compile(r"(?<![:\w]):([A-Za-z_]\w*)")
_ANY = re.compile(r"=\s*ANY\(\?\)")
_FOR_UPDATE = re.compile(r"\s+FOR UPDATE\b")


def to_postgres(neutral: str) -> str:
    """The psycopg text of a neutral statement (``%s`` / ``%(name)s`` placeholders)."""
    text = neutral.replace("%", "%%").replace("?", "%s")
    return _NAMED.sub(r"%(\1)s", text)


def to_sqlite(neutral: str) -> str:
    """The ``sqlite3`` text of a neutral statement (``?`` / ``:name`` stay as they are)."""
    text = _ANY.sub("IN (SELECT value FROM json_each(?))", neutral)
    return _FOR_UPDATE.sub("", text)


@dataclass(frozen=True, slots=True)
class Sql:
    """One statement in both dialects; build it with ``Sql(neutral)`` or ``Sql.split``."""

    sqlite: str
    postgres: str

    def __init__(self, neutral: str) -> None:
        object.__setattr__(self, "sqlite", to_sqlite(neutral))
        object.__setattr__(self, "postgres", to_postgres(neutral))

    @classmethod
    def split(cls, *, sqlite: str, postgres: str) -> Sql:
        """A statement the dialects spell differently (each in neutral placeholder style)."""
        sql = cls.__new__(cls)
        object.__setattr__(sql, "sqlite", to_sqlite(sqlite))
        object.__setattr__(sql, "postgres", to_postgres(postgres))
        return sql

    @classmethod
    def each(cls, neutral: str) -> Sql:
        """A statement that reads an array parameter ``{ids}`` as a table ``j (value, key)``.

        ``key`` orders the elements as given (SQLite's ``json_each``, PostgreSQL's ``unnest …
        WITH ORDINALITY``).
        """
        return cls.split(
            sqlite=neutral.format(ids="json_each(?) AS j"),
            postgres=neutral.format(
                ids="unnest(CAST(? AS bigint[])) WITH ORDINALITY AS j (value, key)"
            ),
        )

    def text(self, dialect: Dialect) -> str:
        return self.sqlite if dialect == "sqlite" else self.postgres


@lru_cache(maxsize=512)
def dynamic(neutral: str) -> Sql:
    """``Sql`` for text assembled at run time (``UPDATE … SET`` lists), rewritten once per text."""
    return Sql(neutral)


@dataclass(frozen=True, slots=True)
class Stmt:
    """One statement to run: ``many`` runs it once per parameter set of ``params``."""

    sql: Sql
    params: Params = ()
    many: bool = False


@dataclass(frozen=True, slots=True)
class Script:
    """A migration: a multi-statement script that commits with its ``schema_migrations`` row."""

    version: int
    body: str
    applied_at: str


@dataclass(slots=True)
class Result:
    """What a statement produced: its rows (empty for none) and the rows it changed."""

    rows: list[Row] = field(default_factory=list)
    rowcount: int = 0


Op = Generator[Stmt | Script, Result, T]


def q(sql: Sql, params: Params = ()) -> Stmt:
    """A statement with its parameters (positional sequence or name mapping)."""
    return Stmt(sql, params)


def first(result: Result) -> Row | None:
    """The first row of a result, or None."""
    return result.rows[0] if result.rows else None


def only(result: Result) -> Row:
    """The row an ``INSERT/UPDATE … RETURNING`` of one row produced."""
    if not result.rows:  # pragma: no cover - only if the statement touched nothing
        raise RuntimeError("the statement returned no row")
    return result.rows[0]
