"""Reaching the SQLite engine's writer process from its own tests."""

from __future__ import annotations

from server.store.engine_store import EngineStore
from server.store.sqlite import SqliteEngine
from server.store.sqlite.process import SqliteProcess


def writer_of(store: EngineStore) -> SqliteProcess:
    assert isinstance(store.engine, SqliteEngine)
    return store.engine._writer
