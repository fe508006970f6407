"""A sqlite3 connection as the engine uses it: opened in autocommit with its pragmas, statements run as lists
of rows, and SQLite's operational failures turned into the store's domain errors."""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Awaitable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from keyscope_server.errors import StoreFull, StoreUnavailable

__all__ = ["Row", "as_json", "connect", "fetch_all", "fetch_one", "rollback", "run_to_end", "store_faults"]

log = logging.getLogger(__name__)

Row = tuple[Any, ...]
T = TypeVar("T")


def connect(path: Path, pragmas: tuple[str, ...]) -> sqlite3.Connection:
    db = sqlite3.connect(path, isolation_level=None)  # autocommit: transactions are explicit
    try:
        for pragma in pragmas:
            db.execute(f"PRAGMA {pragma}").fetchall()
    except BaseException:
        db.close()
        raise
    return db


def fetch_all(db: sqlite3.Connection, sql: str, params: Sequence[Any] = ()) -> list[Row]:
    return db.execute(sql, params).fetchall()


def fetch_one(db: sqlite3.Connection, sql: str, params: Sequence[Any] = ()) -> Row | None:
    rows = fetch_all(db, sql, params)
    return rows[0] if rows else None


def as_json(values: Sequence[Any]) -> str:
    return json.dumps(list(values), separators=(",", ":"))


def rollback(db: sqlite3.Connection) -> None:
    if db.in_transaction:
        db.execute("ROLLBACK")


def run_to_end(rule: Awaitable[T]) -> T:
    """The result of a rule run on this engine's tables, which never suspend: sqlite3 blocks instead, on the
    connection's own thread or process. One coroutine step runs it whole, without an event loop."""
    steps = rule.__await__()
    try:
        steps.send(None)
    except StopIteration as finished:
        result: T = finished.value
        return result
    steps.close()
    raise RuntimeError("a store rule awaited something other than the SQLite engine's tables")


class _StoreFaults:
    """The context of `store_faults`: a class rather than a generator, as it wraps every VerifyKey's catch-up."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, traceback: object) -> None:
        if not isinstance(exc, sqlite3.DatabaseError) or isinstance(exc, sqlite3.IntegrityError):
            return  # no exception, not SQLite's, or a constraint violation (a bug): it goes on as it is
        log.warning("store failure: %s: %s", type(exc).__name__, exc)
        if getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL:
            raise StoreFull() from exc
        raise StoreUnavailable() from exc


_STORE_FAULTS = _StoreFaults()


def store_faults() -> _StoreFaults:
    """Turn SQLite's operational failures into StoreFull (no room to write) or StoreUnavailable; constraint
    violations are bugs."""
    return _STORE_FAULTS
