"""The SQLite file itself, read with the standard sqlite3 module: for the tests of the SQLite engine only.

RPC tests compare the store's logical snapshot instead (tests/rpc_errors.rejected); these read below the
store, where a fault (a full disk, a read-only or removed file) may leave the store unable to answer.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Awaitable, Callable
from pathlib import Path

import grpc
import pytest

from keyscope_server.store import open_store
from keyscope_server.store.snapshot import StoreSnapshot

__all__ = ["exported", "integrity_problems", "rejected", "revision", "snapshot"]


def snapshot(path: Path) -> dict[str, list[tuple]]:
    """Every row of every table of the file."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
        return {t: sorted(db.execute(f'SELECT * FROM "{t}"').fetchall(), key=repr) for t in tables}
    finally:
        db.close()


def revision(path: Path) -> int:
    """The store-wide revision: one more for every change."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return int(db.execute("SELECT revision FROM meta").fetchone()[0])
    finally:
        db.close()


def integrity_problems(path: Path) -> list[tuple]:
    """What PRAGMA integrity_check and PRAGMA foreign_key_check find wrong with the file: [] when it is sound."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        problems = [r for r in db.execute("PRAGMA integrity_check").fetchall() if r != ("ok",)]
        return problems + db.execute("PRAGMA foreign_key_check").fetchall()
    finally:
        db.close()


async def rejected(path: Path, call: Callable[[], Awaitable[object]], code: grpc.StatusCode) -> grpc.aio.AioRpcError:
    """Runs `call()`, which must fail with `code` and leave the file exactly as it was; returns the error."""
    before = snapshot(path)
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await call()
    assert e.value.code() == code
    assert snapshot(path) == before
    return e.value


async def exported(path: Path) -> StoreSnapshot:
    """The logical snapshot of the file no server has open any more."""
    store = await open_store(str(path))
    try:
        return await store.export_snapshot()
    finally:
        await store.close()
