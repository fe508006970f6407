"""Reaching the SQLite engine's writer process from its own tests."""

from __future__ import annotations

from keyscope_server.store.engine_store import EngineStore
from keyscope_server.store.sqlite import SqliteEngine
from keyscope_server.store.sqlite.process import SqliteProcess


def writer_of(store: EngineStore) -> SqliteProcess:
    assert isinstance(store.engine, SqliteEngine)
    return store.engine._writer
