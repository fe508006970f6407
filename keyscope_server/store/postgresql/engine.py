"""The PostgreSQL engine: one database that several Keyscope servers share, through a bounded pool.

Writes go through group commit (keyscope_server.store.group_commit): the writes waiting
at one moment share one transaction (keyscope_server.store.postgresql.batches), which
locks the revision row first. Reads run in a repeatable-read, read-only
transaction: one snapshot. VerifyKey's lookups are one statement each. The
verification cache learns of other servers' commits from the revision row,
read by one round trip that concurrent calls share
(keyscope_server.store.postgresql.freshness), on a connection of its own beside the
pool.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Hashable
from typing import Any, TypeVar

import asyncpg

from keyscope_server.errors import DomainError, StoreFull, StoreUnavailable
from keyscope_server.store.engine import ChangesSince, FirstRead, Rule
from keyscope_server.store.group_commit import GroupCommit, Outcome, Write
from keyscope_server.store.models import KeyVerification, RootKeyGrant
from keyscope_server.store.postgresql import snapshot
from keyscope_server.store.postgresql.batches import run_batch
from keyscope_server.store.postgresql.changes import CHANGES_SINCE, changes_since
from keyscope_server.store.postgresql.connection import OwnConnection, connect, create_pool, store_faults
from keyscope_server.store.postgresql.freshness import SharedRead
from keyscope_server.store.postgresql.keys import FIND_KEY, verification
from keyscope_server.store.postgresql.root_keys import FIND_ROOT_KEY, grant
from keyscope_server.store.postgresql.schema import migrate
from keyscope_server.store.postgresql.settings import PostgresSettings
from keyscope_server.store.postgresql.tables import PostgresTables
from keyscope_server.store.snapshot import ImportProgress, StoreSnapshot

__all__ = ["PostgresEngine", "PostgresSettings"]

T = TypeVar("T")

# What the probe asks: can this server take writes here (not a standby, not read-only)?
_PROBE = "SELECT pg_is_in_recovery() OR current_setting('transaction_read_only') = 'on'"


class PostgresEngine:
    """Implements keyscope_server.store.engine.Engine. Open with `await PostgresEngine.open(url)`."""

    def __init__(self, pool: asyncpg.Pool, revision_reads: OwnConnection, settings: PostgresSettings) -> None:
        self._pool = pool
        self._settings = settings
        self.batches = GroupCommit(self._run_batch)
        self._revision_reads = revision_reads
        self._revision = SharedRead(self._read_revision)
        self._closed = False

    # -- lifecycle ---------------------------------------------------------

    @classmethod
    async def open(cls, url: str, settings: PostgresSettings | None = None) -> PostgresEngine:
        settings = settings or PostgresSettings()
        await cls.prepare(url, settings)
        return cls(await create_pool(url, settings), OwnConnection(url, settings), settings)

    @staticmethod
    async def prepare(url: str, settings: PostgresSettings | None = None) -> None:
        """What `open` does to the database first, and the supervisor of several workers before they open it:
        the schema migrated to the latest version."""
        settings = settings or PostgresSettings()
        with store_faults():
            conn = await connect(url, settings)
            try:
                await migrate(conn)
            finally:
                await conn.close()

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        await self.batches.close()  # the writes already sent commit first
        self._revision_reads.close()
        await self._pool.close()

    def _check_open(self) -> None:
        if self._closed:
            raise StoreUnavailable("the store is closed")

    async def probe(self) -> DomainError | None:
        try:
            self._check_open()
            with store_faults():
                read_only = await self._pool.fetchval(_PROBE)
        except (StoreFull, StoreUnavailable) as fault:
            return fault
        if read_only:
            return StoreUnavailable("the database is read-only (a standby?): point --db at the primary")
        return None

    # -- transactions ---------------------------------------------------------

    async def _run_batch(self, writes: list[Write]) -> list[Outcome]:
        return await run_batch(self._pool, writes, self._settings.write_attempts)

    async def write(self, rule: Rule[T], *args: Any, dry_run: bool = False, first_read: FirstRead | None = None) -> T:
        self._check_open()
        result: T = await self.batches.submit((rule, args, dry_run, first_read))
        return result

    @contextlib.asynccontextmanager
    async def _snapshot(self) -> AsyncIterator[asyncpg.Connection]:
        """A pooled connection in one repeatable-read, read-only transaction: one snapshot of committed data."""
        self._check_open()
        with store_faults():
            async with self._pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
                yield conn

    async def read(self, rule: Rule[T], *args: Any) -> T:
        async with self._snapshot() as conn:
            return await rule(PostgresTables(conn), *args)

    # -- the hot path: one statement each ----------------------------------------

    async def find_key(self, secret_hash: bytes) -> KeyVerification | None:
        self._check_open()
        with store_faults():
            return verification(await self._pool.fetchrow(FIND_KEY, secret_hash))

    async def find_root_key(self, secret_hash: bytes) -> RootKeyGrant | None:
        self._check_open()
        with store_faults():
            return grant(await self._pool.fetchrow(FIND_ROOT_KEY, secret_hash))

    async def _read_revision(self) -> int:
        return int(await self._revision_reads.fetchval("SELECT revision FROM meta"))

    async def commit_mark(self) -> Hashable:
        """The revision, read after this call began (commits take revisions in their order, so it changes with
        every commit); concurrent calls share the read."""
        self._check_open()
        with store_faults():
            return await self._revision()

    async def changes_since(self, revision: int) -> ChangesSince:
        self._check_open()
        with store_faults():
            return changes_since(await self._pool.fetch(CHANGES_SINCE, revision), revision)

    # -- the whole store ---------------------------------------------------------

    async def export_snapshot(self) -> StoreSnapshot:
        async with self._snapshot() as conn:
            return await snapshot.export_snapshot(conn)

    async def import_snapshot(self, whole: StoreSnapshot, progress: ImportProgress | None = None) -> None:
        self._check_open()
        with store_faults():
            async with self._pool.acquire() as conn:
                async with conn.transaction():
                    await snapshot.import_snapshot(conn, whole, progress)
