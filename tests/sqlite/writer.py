"""Reaching the SQLite engine's writer process from its own tests."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from keyscope_server.store.engine_store import EngineStore
from keyscope_server.store.sqlite import SqliteEngine
from keyscope_server.store.sqlite.process import SqliteProcess


def writer_of(store: EngineStore) -> SqliteProcess:
    assert isinstance(store.engine, SqliteEngine)
    return store.engine._writer


# Functions the writer process runs in its tests (sent by reference: they are imported there).


def wait_for(db: sqlite3.Connection, path: Path) -> None:
    """Keep the writer busy until `path` exists: the calls sent meanwhile wait in its pipe."""
    while not path.exists():
        time.sleep(0.001)


def tagged(db: sqlite3.Connection, tag: str) -> tuple[str, int]:
    """`tag`, run alone (1 call)."""
    return tag, 1


def tagged_together(db: sqlite3.Connection, calls: list[tuple[str]]) -> list[tuple[str, int]]:
    """Each call's tag, with how many calls ran in this one; a tag "fail" fails them all."""
    if any(tag == "fail" for (tag,) in calls):
        raise ValueError("one of these calls fails")
    return [(tag, len(calls)) for (tag,) in calls]


setattr(tagged, "together", tagged_together)  # noqa: B010 - as batches.run_batch has
