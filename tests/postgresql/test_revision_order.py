"""Revisions on a shared database: exactly one per change, committed in their order, whichever server wrote them.

A PostgreSQL sequence would be the naive design: its numbers are handed out at
once and committed in any order, so a reader catching up on "changes since N"
could see N+2 committed while N+1 is not yet, move past it, and never learn of
it. Here each write transaction holds the revision row from its first statement
to its commit: a second writer waits for the first.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator

import asyncpg
import pytest
import pytest_asyncio

from keyscope_server.store import open_store
from keyscope_server.store.engine import Tables
from keyscope_server.store.engine_store import EngineStore
from tests.conftest import NewDatabase
from tests.polling import until
from tests.postgresql.backends import lock_waiters
from tests.postgresql.change_records import key_change

pytestmark = pytest.mark.asyncio


@pytest_asyncio.fixture
async def three_servers(new_database: NewDatabase) -> AsyncIterator[list[EngineStore]]:
    """Three stores on one database, as three Keyscope servers would open it (nothing shared but the database)."""
    url = new_database("shared")
    stores = [await open_store(url) for _ in range(3)]
    yield stores
    for store in stores:
        await store.close()


async def _log_change(tx: Tables, key_id: str, gate_id: str | None) -> int:
    """A change of one key; with `gate_id`, held before its commit on that root key's row, which the test locks."""
    revision = await tx.changes.record(key_change(key_id))
    if gate_id is not None:
        await tx.root_keys.set_enabled(gate_id, True)
    return revision


async def test_ok_a_writer_waits_for_the_uncommitted_revision_before_it(
    three_servers: list[EngineStore], new_database: NewDatabase
) -> None:
    first, second, reader = three_servers
    url = new_database("shared")
    gate = await first.create_root_key("gate", hashlib.sha256(b"gate").digest(), ())  # revision 1
    holder = await asyncpg.connect(url)
    try:
        async with holder.transaction():
            await holder.execute("SELECT 1 FROM root_keys WHERE id = $1 FOR UPDATE", gate.id)
            slow = asyncio.create_task(first.engine.write(_log_change, "key_first", gate.id))
            await until(lambda: lock_waiters(url), "the first writer holding revision 2")
            fast = asyncio.create_task(second.engine.write(_log_change, "key_second", None))

            async def second_waits() -> bool:
                return fast.done() or len(await lock_waiters(url)) == 2

            # The second writer is held on the revision row, not running ahead with the next number.
            await until(second_waits, "the second writer waiting on the first")
            assert not fast.done()
            since = await reader.engine.changes_since(1)
            assert (since.current, since.changes) == (1, [])
    finally:
        await holder.close()
    assert (await slow, await fast) == (2, 3)
    since = await reader.engine.changes_since(1)
    assert (since.current, since.complete) == (3, True)
    assert since.changes == [(2, "key", "key_first"), (3, "key", "key_second")]


async def _catch_up_until(reader: EngineStore, last: int, seen_changes: list[tuple[int, str, str]]) -> None:
    """Catch up the way the verification cache does, again and again, checking each answer has no gap."""
    seen = 0
    while seen < last:
        since = await reader.engine.changes_since(seen)
        revisions = [revision for revision, _, _ in since.changes]
        assert revisions == list(range(seen + 1, since.current + 1)), f"after {seen}: {revisions}"
        seen_changes.extend(since.changes)
        seen = since.current
        await asyncio.sleep(0)


async def test_ok_concurrent_writers_on_three_servers_commit_every_revision_in_order(
    three_servers: list[EngineStore],
) -> None:
    writers, per_writer = three_servers, 60

    async def write(store: EngineStore, n: int) -> int:
        return await store.engine.write(_log_change, f"key_{id(store)}_{n}", None)

    seen: list[tuple[int, str, str]] = []
    catching_up = asyncio.create_task(_catch_up_until(writers[2], len(writers) * per_writer, seen))
    revisions = await asyncio.gather(*(write(store, n) for n in range(per_writer) for store in writers))
    await asyncio.wait_for(catching_up, 30)
    assert sorted(revisions) == list(range(1, len(revisions) + 1))
    # The reader, catching up while the writers wrote, met every change once, in revision order.
    assert [revision for revision, _, _ in seen] == list(range(1, len(revisions) + 1))
    assert sorted(key for _, _, key in seen) == sorted(
        f"key_{id(store)}_{n}" for n in range(per_writer) for store in writers
    )
