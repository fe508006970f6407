"""The one place that turns a `--db` value into an engine: a `postgresql://` URL is a PostgreSQL database, anything
else a SQLite file (the default).

The PostgreSQL engine is imported only for a PostgreSQL URL: asyncpg and the engine's modules would add about
10 MB to every process of a server on SQLite (each worker of --workers, and the supervisor)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from keyscope_server.errors import StoreUnavailable
from keyscope_server.store.engine import Engine
from keyscope_server.store.engine_store import EngineStore
from keyscope_server.store.postgresql.settings import PostgresSettings
from keyscope_server.store.sqlite import SqliteEngine
from keyscope_server.store.verify_cache import DEFAULT_LIMITS, CacheLimits

if TYPE_CHECKING:
    from keyscope_server.store.postgresql.engine import PostgresEngine

__all__ = ["ENGINES", "PostgresSettings", "describe_db", "engine_name", "open_engine", "open_store", "prepare_store"]

ENGINES = ("sqlite", "postgresql")  # every engine this build has, by the name tests and benchmarks know it by

_URL_SCHEMES = ("postgresql://", "postgres://")


def engine_name(db: str) -> str:
    """The engine a `--db` value names."""
    return "postgresql" if db.startswith(_URL_SCHEMES) else "sqlite"


def describe_db(db: str) -> str:
    """The database as logs and errors may name it: a SQLite file's absolute path, a URL without its password
    or parameters."""
    if engine_name(db) == "sqlite":
        return os.path.abspath(db)
    try:
        url = urlsplit(db)
        user = f"{url.username}@" if url.username else ""
        port = f":{url.port}" if url.port else ""
        return f"{url.scheme}://{user}{url.hostname or ''}{port}{url.path}"
    except ValueError:
        return "a PostgreSQL URL that does not parse"


@contextlib.contextmanager
def _url_errors() -> Iterator[None]:
    try:
        yield
    except (ValueError, TypeError, OverflowError) as exc:
        # The driver's message may quote the URL, and the URL may hold a password.
        raise StoreUnavailable(f"--db is not a PostgreSQL URL that can be used ({type(exc).__name__})") from None


def _postgres_engine() -> type[PostgresEngine]:
    from keyscope_server.store.postgresql.engine import PostgresEngine  # noqa: PLC0415 - see the docstring

    return PostgresEngine


async def open_engine(db: str, postgres: PostgresSettings | None = None) -> Engine:
    if engine_name(db) == "postgresql":
        with _url_errors():
            return await _postgres_engine().open(db, postgres)
    return await SqliteEngine.open(db)


async def open_store(
    db: str, cache: CacheLimits = DEFAULT_LIMITS, postgres: PostgresSettings | None = None
) -> EngineStore:
    """The store on the database `db` names, its schema migrated to the latest version."""
    return EngineStore(await open_engine(db, postgres), cache)


async def prepare_store(db: str, postgres: PostgresSettings | None = None) -> None:
    """Migrate the database to the latest schema, once, before several server processes open it."""
    if engine_name(db) == "postgresql":
        with _url_errors():
            await _postgres_engine().prepare(db, postgres)
    else:
        await SqliteEngine.prepare(db)
