"""Connections as the engine uses them: a bounded asyncpg pool with bounded waits, and PostgreSQL's failures
turned into the store's domain errors."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import asyncpg

from keyscope_server.errors import StoreFull, StoreUnavailable
from keyscope_server.store.postgresql.settings import PostgresSettings

__all__ = ["OwnConnection", "connect", "create_pool", "is_fault", "is_retryable", "store_faults"]

log = logging.getLogger(__name__)

# SQLSTATE classes that say the database cannot serve now, not that the request is wrong: connection
# exceptions, insufficient resources, operator intervention (shutdown, cancel, timeouts), a read-only
# transaction (a standby), transaction rollback (serialization failures, deadlocks: retried first).
_UNAVAILABLE_CLASSES = ("08", "53", "57", "25", "40", "55", "58", "XX")
# The database refuses this server: a wrong password or role (28), a database that does not exist (3D). Its own
# message says which, and never holds the password.
_REFUSED_CLASSES = ("28", "3D")
_RETRYABLE = ("40001", "40P01")  # serialization failure, deadlock detected
_DISK_FULL = "53100"


def _server_settings(settings: PostgresSettings) -> dict[str, str]:
    return {
        "application_name": "keyscope",
        "statement_timeout": str(int(settings.statement_timeout_seconds * 1000)),
        "lock_timeout": str(int(settings.statement_timeout_seconds * 1000)),
        # A server that vanished mid-transaction must not hold the revision row's lock for long.
        "idle_in_transaction_session_timeout": str(int(max(settings.statement_timeout_seconds * 2, 10) * 1000)),
    }


async def _keep_session(conn: asyncpg.Connection) -> None:
    """What a connection needs when it goes back to the pool, past the rollback of an open transaction that asyncpg
    does anyway: nothing, as the engine changes no session state. (asyncpg's default reset costs a round trip on
    every release.)"""


async def connect(url: str, settings: PostgresSettings) -> asyncpg.Connection:
    """One connection, set up as the pool's are (migrations take one of their own)."""
    conn: asyncpg.Connection = await asyncpg.connect(
        url,
        timeout=settings.connect_timeout_seconds,
        command_timeout=settings.statement_timeout_seconds,
        server_settings=_server_settings(settings),
    )
    return conn


async def create_pool(url: str, settings: PostgresSettings) -> asyncpg.Pool:
    """A pool of at most `pool_size` connections. The URL and libpq's variables (PGPASSWORD, PGPASSFILE,
    PGSSLMODE, ...) say where and how to connect; the URL is never logged."""
    with store_faults():
        pool = await asyncpg.create_pool(
            url,
            min_size=0,  # connections open as calls need them: none is kept retrying while the database is down
            max_size=settings.pool_size,
            timeout=settings.connect_timeout_seconds,
            # The client's own bound, for a database or a network that stops answering.
            command_timeout=settings.statement_timeout_seconds,
            server_settings=_server_settings(settings),
            max_inactive_connection_lifetime=60,
            reset=_keep_session,
        )
    assert pool is not None
    return pool


class OwnConnection:
    """A connection outside the pool, for a user that asks one thing at a time (the freshness read, of which at
    most one is in flight): it skips the pool's acquire and release, which cost more of the server's CPU than
    the read itself. Opened when first needed, and again after a failure."""

    def __init__(self, url: str, settings: PostgresSettings) -> None:
        self._url = url
        self._settings = settings
        self._conn: asyncpg.Connection | None = None

    async def fetchval(self, query: str) -> Any:
        if self._conn is None:
            self._conn = await connect(self._url, self._settings)
        conn = self._conn
        try:
            return await conn.fetchval(query)
        except BaseException:
            # Whatever went wrong (the database, a timeout, a cancellation), the next read starts afresh.
            self._conn = None
            conn.terminate()
            raise

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.terminate()


def is_retryable(exc: BaseException) -> bool:
    return isinstance(exc, asyncpg.PostgresError) and exc.sqlstate in _RETRYABLE


def _sqlstate_class(exc: asyncpg.PostgresError) -> str:
    return str(exc.sqlstate or "XX")[:2]


def is_fault(exc: BaseException) -> bool:
    """The database's or the network's failure, not the request's (nor a bug)."""
    if isinstance(exc, asyncpg.PostgresError):
        return _sqlstate_class(exc) in (*_UNAVAILABLE_CLASSES, *_REFUSED_CLASSES)
    return isinstance(exc, OSError | asyncio.TimeoutError | asyncpg.InterfaceError | asyncpg.InternalClientError)


def _describe(exc: BaseException) -> str:
    sqlstate = getattr(exc, "sqlstate", None)
    return f"{type(exc).__name__}{f' [{sqlstate}]' if sqlstate else ''}: {exc}"


class _StoreFaults:
    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, traceback: object) -> None:
        if exc is None or not is_fault(exc):
            return  # no exception, or not the database's fault (a domain error, a bug): it goes on as it is
        log.warning("store failure: %s", _describe(exc))
        if getattr(exc, "sqlstate", None) == _DISK_FULL:
            raise StoreFull() from exc
        if isinstance(exc, asyncpg.PostgresError) and _sqlstate_class(exc) in _REFUSED_CLASSES:
            raise StoreUnavailable(f"the database refused this server: {exc}") from exc
        raise StoreUnavailable() from exc


_STORE_FAULTS = _StoreFaults()


def store_faults() -> _StoreFaults:
    """Turn PostgreSQL's and the network's failures into StoreFull or StoreUnavailable; anything else (a
    constraint violation is a bug) goes on as it is."""
    return _STORE_FAULTS
