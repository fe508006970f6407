"""The SQLite store creates and migrates its own schema, and refuses one it does not know."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from server.access import Principal
from server.errors import StoreUnavailable
from server.store import open_store
from server.store.models import ScopeSpec
from server.store.sqlite.schema import LATEST_VERSION

pytestmark = pytest.mark.asyncio

CREATOR = Principal("root_test", ("api.*.create_api", "api.*.read_api"))


def _pragma(path: Path, name: str) -> object:
    db = sqlite3.connect(path)
    try:
        return db.execute(f"PRAGMA {name}").fetchone()[0]
    finally:
        db.close()


async def test_ok_fresh_file_gets_latest_schema_in_wal_mode(db_path: Path) -> None:
    store = await open_store(str(db_path))
    await store.close()
    assert _pragma(db_path, "user_version") == LATEST_VERSION
    assert _pragma(db_path, "journal_mode") == "wal"


async def test_ok_reopening_keeps_data_and_revision(db_path: Path) -> None:
    store = await open_store(str(db_path))
    written = await store.create_api(CREATOR, "kept", [ScopeSpec("a.read", "A")])
    await store.close()

    store = await open_store(str(db_path))
    try:
        api = await store.get_api(CREATOR, written.value.id)
        assert [s.name for s in api.scopes] == ["a.read"]
        assert await store.revision() == written.revision
    finally:
        await store.close()


async def test_ok_two_stores_migrating_one_new_file_at_once(db_path: Path) -> None:
    # Worker processes may start together on a new file: one migrates, the other waits and skips.
    first, second = await asyncio.gather(open_store(str(db_path)), open_store(str(db_path)))
    await first.close()
    await second.close()
    assert _pragma(db_path, "user_version") == LATEST_VERSION


async def test_unavailable_schema_newer_than_the_server(db_path: Path) -> None:
    db = sqlite3.connect(db_path)
    db.execute(f"PRAGMA user_version = {LATEST_VERSION + 1}")
    db.close()
    with pytest.raises(StoreUnavailable, match="newer than this server"):
        await open_store(str(db_path))


async def test_unavailable_file_cannot_be_opened(tmp_path: Path) -> None:
    with pytest.raises(StoreUnavailable):
        await open_store(str(tmp_path / "missing-dir" / "keyscope.db"))


async def test_unavailable_after_close(db_path: Path) -> None:
    store = await open_store(str(db_path))
    await store.close()
    with pytest.raises(StoreUnavailable):
        await store.revision()
