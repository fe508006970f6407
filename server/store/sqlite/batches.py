"""Group commit: the writes waiting at one moment share one SQLite transaction.

Each write (a rule of the store and its arguments) runs in a savepoint of its
own, so one that fails (a domain error, say) leaves no trace while the others
go on; the batch then commits once, with one fsync, and only after that commit
does any caller hear that its write succeeded. Writes keep their arrival
order, and each still bumps the store-wide revision by itself. If the commit
itself fails, every write of the batch fails with it and nothing of the batch
is written. A dry run (validate_only) is rolled back like a failed write, and
its caller gets the answer its rule gave. A write whose caller has already
gone (a cancelled call, a passed deadline) is not started.
"""

from __future__ import annotations

import asyncio
import sqlite3
from typing import Any

from server.store.engine import Rule
from server.store.sqlite.connection import rollback, run_to_end
from server.store.sqlite.process import SqliteProcess, with_child_traceback
from server.store.sqlite.tables import SqliteTables

__all__ = ["Write", "WriteBatcher"]

MAX_BATCH = 128

Write = tuple[Rule[Any], tuple[Any, ...], bool]  # (rule, its arguments after the tables, dry run)
Outcome = tuple[bool, Any]  # (True, result) or (False, exception)


def _run_batch(db: sqlite3.Connection, writes: list[Write]) -> list[Outcome]:
    tables = SqliteTables(db)
    outcomes: list[Outcome] = []
    db.execute("BEGIN IMMEDIATE")
    try:
        for rule, args, dry_run in writes:
            db.execute("SAVEPOINT write")
            try:
                outcomes.append((True, run_to_end(rule(tables, *args))))
                if dry_run:
                    db.execute("ROLLBACK TO write")
            except Exception as exc:  # noqa: BLE001 - handed to the write's caller
                db.execute("ROLLBACK TO write")
                outcomes.append((False, with_child_traceback(exc)))
            db.execute("RELEASE write")
        db.execute("COMMIT")
    except BaseException:
        rollback(db)
        raise
    return outcomes


class WriteBatcher:
    """Sends writes to the writer process in batches, from one task of its own."""

    def __init__(self, writer: SqliteProcess) -> None:
        self._writer = writer
        self._queue: asyncio.Queue[tuple[Write, asyncio.Future[Any]] | None] = asyncio.Queue()
        self._task = asyncio.create_task(self._drain(), name="keyscope-write-batches")

    async def submit(self, write: Write) -> Any:
        """The result of the write's rule once its batch has committed; or its exception."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((write, future))
        return await future

    async def close(self) -> None:
        """Finish the writes already submitted, then stop."""
        self._queue.put_nowait(None)
        await self._task

    async def _drain(self) -> None:
        stopping = False
        while not stopping:
            item = await self._queue.get()
            batch: list[tuple[Write, asyncio.Future[Any]]] = []
            while item is not None:
                if not item[1].done():  # a caller that is gone (cancelled) has its write dropped
                    batch.append(item)
                if len(batch) == MAX_BATCH or self._queue.empty():
                    break
                item = self._queue.get_nowait()
            stopping = item is None
            if batch:
                await self._commit(batch)

    async def _commit(self, batch: list[tuple[Write, asyncio.Future[Any]]]) -> None:
        try:
            outcomes = await self._writer.run(_run_batch, [write for write, _ in batch])
        except Exception as exc:  # noqa: BLE001 - the whole batch failed: every caller hears why
            outcomes = [(False, exc)] * len(batch)
        for (_, future), (ok, value) in zip(batch, outcomes, strict=True):
            if future.done():  # the caller was cancelled; its write ran all the same
                continue
            if ok:
                future.set_result(value)
            else:
                future.set_exception(value)
