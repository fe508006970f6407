"""The SQLite engine's own tests: each runs on SQLite only, whatever engines the rest of the suite covers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest_asyncio

from keyscope_server.store.engine_store import EngineStore
from keyscope_server.store.sqlite import SqliteEngine


@pytest_asyncio.fixture
async def store(db_path: Path) -> AsyncIterator[EngineStore]:
    store = EngineStore(await SqliteEngine.open(db_path))
    yield store
    await store.close()
