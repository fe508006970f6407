"""The one place that turns a `--db` value into an engine: a path (the default) is a SQLite file."""

from __future__ import annotations

from server.errors import StoreUnavailable
from server.store.engine import Engine
from server.store.engine_store import EngineStore
from server.store.sqlite import SqliteEngine
from server.store.verify_cache import DEFAULT_LIMITS, CacheLimits

__all__ = ["ENGINES", "engine_name", "open_engine", "open_store", "prepare_store"]

ENGINES = ("sqlite",)  # every engine this build has, by the name tests and benchmarks know it by

_URL_SCHEMES = ("postgresql://", "postgres://")


def engine_name(db: str) -> str:
    """The engine a `--db` value names."""
    return "postgresql" if db.startswith(_URL_SCHEMES) else "sqlite"


def _unsupported(db: str) -> StoreUnavailable:
    # The URL itself is not repeated: it may hold a password.
    return StoreUnavailable(f"--db names a {engine_name(db)} database, and this build has only the SQLite engine")


async def open_engine(db: str) -> Engine:
    if engine_name(db) != "sqlite":
        raise _unsupported(db)
    return await SqliteEngine.open(db)


async def open_store(db: str, cache: CacheLimits = DEFAULT_LIMITS) -> EngineStore:
    """The store on the database `db` names, its schema migrated to the latest version."""
    return EngineStore(await open_engine(db), cache)


async def prepare_store(db: str) -> None:
    """Migrate the database to the latest schema, once, before several server processes open it."""
    if engine_name(db) != "sqlite":
        raise _unsupported(db)
    await SqliteEngine.prepare(db)
