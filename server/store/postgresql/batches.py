"""Group commit on PostgreSQL (server.store.group_commit queues the writes).

A batch is one transaction on one pooled connection. Its first statement locks
the revision row (`meta`), and the lock is held until the commit: write
transactions run one at a time across every server on the database, as on
SQLite, so revisions commit in their order and no two writers can deadlock on
each other's rows. The batch pays that lock, and the commit's WAL flush, once
for all its writes. Each write runs in a savepoint of its own; a dry run is
rolled back to it. A serialization failure or a deadlock (say, with someone
else's transaction on the same database) rolls the batch back whole, and it
runs again, up to a bound; past it, every write of the batch fails with
StoreUnavailable and nothing of it is written.
"""

from __future__ import annotations

import asyncio
import logging
import random

import asyncpg

from server.errors import StoreUnavailable
from server.store.group_commit import Outcome, Write
from server.store.postgresql.connection import is_retryable, store_faults
from server.store.postgresql.tables import PostgresTables

__all__ = ["BEGIN_WRITE", "run_batch"]

log = logging.getLogger(__name__)

BEGIN_WRITE = "BEGIN; SELECT revision FROM meta WHERE singleton = 1 FOR UPDATE"


class _BatchFailed(Exception):
    """A write met a failure of the transaction itself (its connection, a deadlock): the batch is undone."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.cause = cause


def _of_the_transaction(exc: BaseException) -> bool:
    """Failures that are not the write's own: retried, or the end of the batch."""
    if is_retryable(exc):
        return True
    if isinstance(exc, asyncpg.PostgresError):
        return str(exc.sqlstate or "")[:2] in ("08", "57", "53", "25", "55")
    return isinstance(exc, OSError | asyncio.TimeoutError | asyncpg.InterfaceError)


async def _run_once(conn: asyncpg.Connection, writes: list[Write]) -> list[Outcome]:
    tables = PostgresTables(conn)
    outcomes: list[Outcome] = []
    # Each round trip between two writes also ends the one and opens the next: BEGIN, the lock and the first
    # savepoint go together, and so do the last release and the commit.
    await conn.execute(f"{BEGIN_WRITE}; SAVEPOINT write")
    try:
        for number, (rule, args, dry_run) in enumerate(writes, 1):
            try:
                outcomes.append((True, await rule(tables, *args)))
                undo = dry_run
            except Exception as exc:  # noqa: BLE001 - handed to the write's caller
                if _of_the_transaction(exc):
                    raise _BatchFailed(exc) from exc
                outcomes.append((False, exc))
                undo = True
            then = "SAVEPOINT write" if number < len(writes) else "COMMIT"
            await conn.execute(f"{'ROLLBACK TO write; ' if undo else ''}RELEASE write; {then}")
    finally:
        if not conn.is_closed() and conn.is_in_transaction():
            await conn.execute("ROLLBACK")
    return outcomes


async def run_batch(pool: asyncpg.Pool, writes: list[Write], attempts: int) -> list[Outcome]:
    for attempt in range(1, attempts + 1):
        try:
            with store_faults():
                async with pool.acquire() as conn:
                    try:
                        return await _run_once(conn, writes)
                    except _BatchFailed as failed:
                        raise failed.cause from None
        except StoreUnavailable as unavailable:
            cause = unavailable.__cause__
            if cause is None or not is_retryable(cause) or attempt == attempts:
                raise
            log.info("write batch: %s, attempt %d of %d; trying again", type(cause).__name__, attempt, attempts)
        await asyncio.sleep(random.uniform(0.001, 0.005) * attempt)
    raise StoreUnavailable("the database kept aborting the write")  # not reached: the last attempt raises
