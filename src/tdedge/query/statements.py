"""What kind of statement a job runs, and its parts: a query, a SHOW, or a write.

A job runs one statement. Queries (``SELECT``, ``WITH``, ``VALUES``) go to the
translator as they are. ``SHOW SCHEMAS``, ``SHOW TABLES``, ``SHOW COLUMNS FROM t`` and
``DESCRIBE t`` are answered from the account's own lake (query/show.py). Writes —
``INSERT INTO``, ``CREATE TABLE … AS``, ``CREATE TABLE (columns)``, ``DELETE FROM`` — are split into
the query that computes their rows, run like any other in the job's sandboxed
session, and the table they write, which tdedge writes itself (query/writes.py).
``DROP TABLE [IF EXISTS]`` drops the table as the REST API's table delete does.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal
from urllib.parse import parse_qs, unquote, urlsplit

import sqlglot
from sqlglot import exp
from sqlglot.errors import ParseError, SqlglotError

from tdedge.names import is_valid_name, normalize
from tdedge.query.translate import ENGINES, TranslationError

WriteKind = Literal["insert", "ctas", "create", "delete", "drop"]


@dataclass(frozen=True, slots=True)
class Target:
    database: str
    table: str


@dataclass(frozen=True, slots=True)
class Read:
    query: str  # in the job's dialect


@dataclass(frozen=True, slots=True)
class ShowTables:
    database: str
    like: str | None


@dataclass(frozen=True, slots=True)
class ShowSchemas:
    like: str | None


@dataclass(frozen=True, slots=True)
class ShowColumns:
    target: Target


@dataclass(frozen=True, slots=True)
class Write:
    kind: WriteKind
    target: Target
    # The rows to write (insert, ctas) or the row ids to delete (delete), as a query
    # in the job's dialect; None: no rows (create) or every row (delete without WHERE).
    source: str | None = None
    if_not_exists: bool = False
    # CREATE TABLE's columns: name → the type given.
    columns: tuple[tuple[str, str], ...] = ()
    if_exists: bool = False  # DROP TABLE IF EXISTS


Show = ShowTables | ShowColumns | ShowSchemas
Statement = Read | Show | Write


def statement_database(statement: Show) -> str | None:
    """The database a SHOW reads; None for the list of databases."""
    if isinstance(statement, ShowTables):
        return statement.database
    return statement.target.database if isinstance(statement, ShowColumns) else None


_COMMENTS = re.compile(r"\A(?:\s+|--[^\n]*(?:\n|\Z)|/\*.*?\*/)*", re.S)
_SHOW_TABLES = re.compile(
    r"SHOW\s+TABLES(?:\s+(?:FROM|IN)\s+(?P<db>[\w.\"`]+))?(?:\s+LIKE\s+'(?P<like>(?:[^']|'')*)')?\s*;?\s*",
    re.I,
)
_SHOW_SCHEMAS = re.compile(
    r"SHOW\s+(?:SCHEMAS|DATABASES)(?:\s+FROM\s+\w+)?(?:\s+LIKE\s+'(?P<like>(?:[^']|'')*)')?\s*;?\s*",
    re.I,
)
_SHOW_COLUMNS = re.compile(
    r"(?:SHOW\s+COLUMNS\s+(?:FROM|IN)|DESCRIBE|DESC)\s+(?P<table>[\w.\"`]+)\s*;?\s*", re.I
)


def classify(query: str, engine: str, database: str) -> Statement:
    """The statement of a job's ``query`` in ``engine``'s dialect, its tables named in
    ``database`` when unqualified."""
    body = query[_COMMENTS.match(query).end() :]  # type: ignore[union-attr]
    if m := _SHOW_TABLES.fullmatch(body):
        named = m.group("db")
        db = _name(named.split(".")[-1], "database") if named else database
        like = m.group("like")
        return ShowTables(db, None if like is None else like.replace("''", "'"))
    if m := _SHOW_SCHEMAS.fullmatch(body):
        like = m.group("like")
        return ShowSchemas(None if like is None else like.replace("''", "'"))
    if m := _SHOW_COLUMNS.fullmatch(body):
        return ShowColumns(_target_text(m.group("table"), database))
    dialect = ENGINES.get(engine)
    if dialect is None:
        raise TranslationError(f"unknown query engine {engine!r}")
    try:
        statements = [s for s in sqlglot.parse(query, read=dialect) if s is not None]
    except ParseError:
        return Read(query)  # the translator says what is wrong, as for any query
    except SqlglotError as e:
        raise TranslationError(str(e)) from None
    if len(statements) != 1:
        return Read(query)
    tree = statements[0]
    if isinstance(tree, exp.Insert):
        return _insert(tree, dialect, database)
    if isinstance(tree, exp.Create) and str(tree.args.get("kind", "")).upper() == "TABLE":
        return _create(tree, dialect, database)
    if isinstance(tree, exp.Delete):
        return _delete(tree, dialect, database)
    if isinstance(tree, exp.Drop) and str(tree.args.get("kind", "")).upper() == "TABLE":
        return _drop(tree, dialect, database)
    if isinstance(tree, exp.Query):
        return Read(query)
    raise TranslationError(
        "a job runs one query (SELECT …), SHOW TABLES, SHOW COLUMNS, DESCRIBE, INSERT INTO, "
        f"CREATE TABLE, DELETE or DROP TABLE; not {_first_word(body)}"
    )


@dataclass(frozen=True, slots=True)
class ResultTarget:
    """Where a job writes its result too: TD's ``td://@/database/table?mode=…``."""

    target: Target
    replace: bool  # mode=replace: the result replaces the table's rows; else appended


def result_target(url: str) -> ResultTarget:
    """The table a ``result`` URL names; TranslationError when it is not one here.

    Only this account's tables (``td://@/…``, no other API key), the modes TD's table
    output has (``append``, the default, and ``replace``)."""
    parsed = urlsplit(url.strip())
    if parsed.scheme.lower() not in ("td", "treasure-data"):
        raise TranslationError(
            f"results can be written into tables only (td://@/database/table), not {url!r}"
        )
    if parsed.netloc not in ("@", "") or parsed.username or parsed.password:
        raise TranslationError("a result is written into this account's tables: td://@/db/table")
    parts = [unquote(p) for p in parsed.path.split("/") if p]
    if len(parts) != 2:
        raise TranslationError(f"td://@/database/table names a table: not {url!r}")
    modes = parse_qs(parsed.query).get("mode", ["append"])
    mode = modes[-1].lower()
    if mode not in ("append", "replace"):
        raise TranslationError(f"mode={mode}: append or replace")
    target = Target(_name(parts[0], "database"), _name(parts[1], "table"))
    return ResultTarget(target, mode == "replace")


def _insert(tree: exp.Insert, dialect: str, database: str) -> Write:
    if tree.args.get("overwrite"):
        raise TranslationError("INSERT OVERWRITE is not supported: DELETE, then INSERT INTO")
    into = tree.this
    names: list[str] = []
    if isinstance(into, exp.Schema):
        names = [_name(c.name, "column") for c in into.expressions]
        into = into.this
    if not isinstance(into, exp.Table):
        raise TranslationError(f"INSERT INTO what? {into.sql(dialect)}")
    target = _target(into, database)
    source = tree.expression
    if isinstance(source, exp.Values) or (names and isinstance(source, exp.Query)):
        source = _renamed(source, names)
    if not isinstance(source, exp.Query):
        raise TranslationError("INSERT INTO takes a query (SELECT …) or VALUES")
    return Write("insert", target, source.sql(dialect))


def _renamed(source: exp.Expr, names: list[str]) -> exp.Query:
    """``SELECT * FROM (source) AS t(names…)``: the rows with the columns listed."""
    alias = exp.TableAlias(
        this=exp.to_identifier("tdedge_rows"),
        columns=[exp.to_identifier(n) for n in names],
    )
    if isinstance(source, exp.Values):
        source.set("alias", alias)
        return exp.select("*").from_(source)
    return exp.select("*").from_(exp.Subquery(this=source, alias=alias))


def _create(tree: exp.Create, dialect: str, database: str) -> Write:
    into = tree.this
    if_not_exists = bool(tree.args.get("exists"))
    if isinstance(into, exp.Schema):
        table = into.this
        if not isinstance(table, exp.Table):
            raise TranslationError(f"CREATE TABLE of what? {into.sql(dialect)}")
        columns = []
        for c in into.expressions:
            if not isinstance(c, exp.ColumnDef):
                raise TranslationError(f"unsupported table element {c.sql(dialect)}")
            kind = c.args.get("kind")
            columns.append((_name(c.name, "column"), kind.sql(dialect) if kind else "varchar"))
        if tree.expression is not None:
            raise TranslationError("CREATE TABLE … AS takes no column list here")
        return Write("create", _target(table, database), None, if_not_exists, tuple(columns))
    if not isinstance(into, exp.Table):
        raise TranslationError(f"CREATE TABLE of what? {into.sql(dialect)}")
    source = tree.expression
    if source is None:
        raise TranslationError("CREATE TABLE needs columns or AS SELECT …")
    if not isinstance(source, exp.Query):
        raise TranslationError("CREATE TABLE … AS takes a query (SELECT …)")
    return Write("ctas", _target(into, database), source.sql(dialect), if_not_exists)


def _delete(tree: exp.Delete, dialect: str, database: str) -> Write:
    table = tree.this
    if not isinstance(table, exp.Table):
        raise TranslationError(f"DELETE FROM what? {table.sql(dialect)}")
    target = _target(table, database)
    where = tree.args.get("where")
    if where is None:
        return Write("delete", target)
    # The row ids of the rows to delete, read in the job's own session like any query.
    ref = exp.table_(target.table, db=target.database)
    alias = table.alias
    if alias:
        ref.set("alias", exp.TableAlias(this=exp.to_identifier(alias)))
    query = exp.select(exp.alias_(exp.column("rowid"), "row_id")).from_(ref).where(where.this)
    return Write("delete", target, query.sql(dialect))


def _drop(tree: exp.Drop, dialect: str, database: str) -> Write:
    tables = tree.args.get("tables") or [tree.this]
    if len(tables) != 1 or not isinstance(tables[0], exp.Table):
        raise TranslationError(f"DROP TABLE drops one table here: {tree.sql(dialect)}")
    table = tables[0]
    if tree.args.get("cascade") or tree.args.get("purge"):
        raise TranslationError("DROP TABLE takes no CASCADE or PURGE here")
    return Write("drop", _target(table, database), if_exists=bool(tree.args.get("exists")))


def _target(table: exp.Table, database: str) -> Target:
    if table.catalog and table.catalog.lower() != "lake":
        raise TranslationError(f"unknown catalog {table.catalog!r}")
    db = _name(table.db, "database") if table.db else database
    return Target(db, _name(table.name, "table"))


def _target_text(text: str, database: str) -> Target:
    parts = [p.strip('"`') for p in text.split(".")]
    if len(parts) == 3 and parts[0].lower() == "lake":
        parts = parts[1:]
    if len(parts) == 1:
        return Target(database, _name(parts[0], "table"))
    if len(parts) == 2:
        return Target(_name(parts[0], "database"), _name(parts[1], "table"))
    raise TranslationError(f"no such table {text}")


def _name(text: str, what: str) -> str:
    name = text.strip('"`')
    if not is_valid_name(name):
        raise TranslationError(f"invalid {what} name {name!r}: letters, digits and _ only")
    return normalize(name)


def _first_word(body: str) -> str:
    words = body.split(None, 2)
    return " ".join(words[:2]).upper() if words else "an empty statement"
