"""Group commit on PostgreSQL (keyscope_server.store.group_commit queues the writes).

A batch is one transaction on one pooled connection. Its first statement locks
the revision row (`meta`), and the lock is held until the commit: write
transactions run one at a time across every server on the database, as on
SQLite, so revisions commit in their order and no two writers can deadlock on
each other's rows. The batch pays that lock, and the commit's WAL flush, once
for all its writes. Writes seldom fail, so a batch first runs with no savepoint
between its writes (one round trip fewer a write, and no subtransaction: 7%
more SetPermissions a second, 11% as a ratio to health); if one fails, the batch is rolled back and run
again with a savepoint around each write, so that the failed one leaves no
trace and the others go on. Their answers are those of the second run, as no
caller has heard the first. Once the lock is taken, the key each write reads
first is read for all of them in one statement (read_ahead), so that a write
costs one round trip under the lock, the statement that records it. A dry run is always rolled back to a savepoint of
its own. A serialization failure or a deadlock (say, with someone
else's transaction on the same database) rolls the batch back whole, and it
runs again, up to a bound; past it, every write of the batch fails with
StoreUnavailable and nothing of it is written.
"""

from __future__ import annotations

import asyncio
import logging
import random

import asyncpg

from keyscope_server.errors import StoreUnavailable
from keyscope_server.store.group_commit import Outcome, Write
from keyscope_server.store.postgresql.connection import is_fault, is_retryable, store_faults
from keyscope_server.store.postgresql.read_ahead import ReadAhead
from keyscope_server.store.postgresql.tables import PostgresTables

__all__ = ["BEGIN_WRITE", "run_batch"]

log = logging.getLogger(__name__)

# A write's statements run on generic plans, made once per connection: left to choose, PostgreSQL plans the
# statement that records a change (changes.record_statement) afresh on every call, which cost 216 µs of the
# database's CPU a write, more than running it (148 µs).
BEGIN_WRITE = (
    "BEGIN; SET LOCAL plan_cache_mode = force_generic_plan; SELECT revision FROM meta WHERE singleton = 1 FOR UPDATE"
)


class _BatchFailed(Exception):
    """A write met a failure of the transaction itself (its connection, a deadlock): the batch is undone."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.cause = cause


async def _run_once(conn: asyncpg.Connection, writes: list[Write], guarded: bool) -> list[Outcome] | None:
    """The batch in one transaction. Unguarded, the writes run with no savepoint around them (a dry run still
    has one), and the first that fails ends the attempt: None, everything rolled back. Guarded, each write has
    a savepoint of its own, and a failed one leaves no trace while the others go on."""
    outcomes: list[Outcome] = []
    # The writes that run in a savepoint of their own: every write when guarded, else only the dry runs. Round
    # trips are what a batch costs: BEGIN, the lock and the first savepoint go in one, and so do the end of one
    # write, the start of the next and, after the last, the commit.
    held = [guarded or dry_run for _, _, dry_run, _ in writes]
    await conn.execute("; ".join([BEGIN_WRITE, *(["SAVEPOINT write"] if held[0] else [])]))
    try:
        # After the lock, in a statement of its own: what the writes read first, as no one else can change it now.
        first_reads = [first_read for _, _, _, first_read in writes if first_read is not None]
        tables = PostgresTables(conn, await ReadAhead.read(conn, first_reads) if first_reads else None)
        for number, (rule, args, dry_run, _) in enumerate(writes):
            try:
                outcomes.append((True, await rule(tables, *args)))
                undo = dry_run
            except Exception as exc:  # noqa: BLE001 - handed to the write's caller
                if is_fault(exc):  # the transaction's failure (its connection, a deadlock), not the write's
                    raise _BatchFailed(exc) from exc
                if not guarded:
                    return None
                outcomes.append((False, exc))
                undo = True
            ending = ((["ROLLBACK TO write"] if undo else []) + ["RELEASE write"]) if held[number] else []
            following = ["COMMIT"] if number == len(writes) - 1 else ["SAVEPOINT write"] if held[number + 1] else []
            if ending or following:
                await conn.execute("; ".join(ending + following))
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
                        # Writes seldom fail: a batch runs unguarded first, and again, guarded, if one did.
                        outcomes = await _run_once(conn, writes, guarded=False)
                        if outcomes is None:
                            outcomes = await _run_once(conn, writes, guarded=True)
                        assert outcomes is not None
                        return outcomes
                    except _BatchFailed as failed:
                        raise failed.cause from None
        except StoreUnavailable as unavailable:
            cause = unavailable.__cause__
            if cause is None or not is_retryable(cause) or attempt == attempts:
                raise
            log.info("write batch: %s, attempt %d of %d; trying again", type(cause).__name__, attempt, attempts)
        await asyncio.sleep(random.uniform(0.001, 0.005) * attempt)
    raise StoreUnavailable("the database kept aborting the write")  # not reached: the last attempt raises
