"""Serialization failures and deadlocks: a write batch that meets one is rolled back whole and run again, with a
bound; the caller never sees the failure, or, past the bound, gets UNAVAILABLE and nothing changed.

Keyscope's own writers cannot deadlock (each write transaction takes the revision row first), so the deadlock
here comes from someone else's transaction on the same database, holding a key's row and then asking for the
revision row while a write batch holds it and waits for the key.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

import asyncpg
import pytest

from keyscope_server.access import Principal
from keyscope_server.cli import EXAMPLE_ROOT_KEY
from keyscope_server.credentials import hash_secret, new_secret
from keyscope_server.errors import StoreUnavailable
from keyscope_server.store import Store, open_store
from keyscope_server.store.engines import PostgresSettings
from keyscope_server.store.models import NewKey
from tests.conftest import NewDatabase
from tests.polling import until
from tests.postgresql.backends import lock_waiters

pytestmark = pytest.mark.asyncio

ADMIN = Principal("root_test", EXAMPLE_ROOT_KEY)
T = TypeVar("T")


async def _api_and_key(store: Store) -> str:
    api = (await store.create_api(ADMIN, "documents", [])).value
    new = NewKey(api.id, "k", hash_secret(new_secret("sk")), "sk_ab", True, None, ("documents.read",), ())
    return (await store.create_key(ADMIN, new)).value.id


async def _deadlocked(url: str, key_id: str, write: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
    """Hold the key's row, start the write, wait until its batch waits for the row, then ask for the revision row
    that the batch holds. The write, which PostgreSQL aborted once, goes on in the task returned."""
    other = await asyncpg.connect(url)
    try:
        await other.execute("SET deadlock_timeout = '60s'")  # so that the write batch is the one that gives way
        async with other.transaction():
            await other.execute("SELECT 1 FROM keys WHERE id = $1 FOR UPDATE", key_id)
            task = asyncio.create_task(write)
            await until(lambda: lock_waiters(url), "the write batch waiting for the key's row")
            assert not task.done()
            await other.fetchval("SELECT revision FROM meta FOR UPDATE")  # the deadlock: the batch is aborted
    finally:
        await other.close()
    return task


async def _deadlocks(url: str) -> int:
    conn = await asyncpg.connect(url)
    try:
        return int(await conn.fetchval("SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()"))
    finally:
        await conn.close()


async def test_ok_a_deadlocked_write_is_run_again_and_succeeds(new_database: NewDatabase) -> None:
    url = new_database("keyscope")
    store = await open_store(url)
    try:
        key_id = await _api_and_key(store)
        write = await _deadlocked(url, key_id, store.set_permissions(ADMIN, key_id, ["documents.write"]))
        update = await asyncio.wait_for(write, 30)
        assert [p.name for p in update.permissions] == ["documents.write"]
        assert update.revision == 3  # the API, the key, this: the aborted attempt took no revision
        # PostgreSQL saw the deadlock (its statistics arrive within a second or so), and the caller never did.
        await until(lambda: _deadlocks(url), "the deadlock in pg_stat_database")
        key = await store.get_key(ADMIN, key_id)
        assert [p.name for p in key.permissions] == ["documents.write"]
    finally:
        await store.close()


async def test_unavailable_past_the_bound_and_nothing_changed(new_database: NewDatabase) -> None:
    url = new_database("keyscope")
    store = await open_store(url, postgres=PostgresSettings(write_attempts=1))
    try:
        key_id = await _api_and_key(store)
        before = await store.export_snapshot()
        write = await _deadlocked(url, key_id, store.set_permissions(ADMIN, key_id, ["documents.write"]))
        with pytest.raises(StoreUnavailable):
            await asyncio.wait_for(write, 30)
        assert await store.export_snapshot() == before
    finally:
        await store.close()
