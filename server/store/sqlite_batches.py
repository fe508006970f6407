"""Group commit: the write operations waiting at one moment share one SQLite transaction.

Each operation runs in a savepoint of its own, so one that fails (a domain
error, say) leaves no trace while the others go on; the batch then commits
once, with one fsync, and only after that commit does any caller hear that its
write succeeded. Operations keep their arrival order, and each still bumps the
store-wide revision by itself. If the commit itself fails, every operation of
the batch fails with it and nothing of the batch is written. An operation that
ends in DryRun (validate_only) is rolled back like a failed one, and its caller
gets the answer it carries. An operation whose caller has already gone (a
cancelled call, a passed deadline) is not started.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from typing import Any

from server.store.sqlite_process import SqliteProcess, with_child_traceback
from server.store.sqlite_steps import DryRun, rollback

__all__ = ["WriteBatcher"]

MAX_BATCH = 128

Operation = tuple[Callable[..., Any], tuple[Any, ...]]
Outcome = tuple[bool, Any]  # (True, result) or (False, exception)


def _run_batch(db: sqlite3.Connection, operations: list[Operation]) -> list[Outcome]:
    outcomes: list[Outcome] = []
    db.execute("BEGIN IMMEDIATE")
    try:
        for fn, args in operations:
            db.execute("SAVEPOINT operation")
            try:
                outcomes.append((True, fn(db, *args)))
            except DryRun as dry_run:
                db.execute("ROLLBACK TO operation")
                outcomes.append((True, dry_run.result))
            except Exception as exc:  # noqa: BLE001 - handed to the operation's caller
                db.execute("ROLLBACK TO operation")
                outcomes.append((False, with_child_traceback(exc)))
            db.execute("RELEASE operation")
        db.execute("COMMIT")
    except BaseException:
        rollback(db)
        raise
    return outcomes


class WriteBatcher:
    """Sends write operations to the writer process in batches, from one task of its own."""

    def __init__(self, writer: SqliteProcess) -> None:
        self._writer = writer
        self._queue: asyncio.Queue[tuple[Operation, asyncio.Future[Any]] | None] = asyncio.Queue()
        self._task = asyncio.create_task(self._drain(), name="keyscope-write-batches")

    async def submit(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> Any:
        """The result of `fn(connection, *args)` once its batch has committed; or its exception."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(((fn, args), future))
        return await future

    async def close(self) -> None:
        """Finish the operations already submitted, then stop."""
        self._queue.put_nowait(None)
        await self._task

    async def _drain(self) -> None:
        stopping = False
        while not stopping:
            item = await self._queue.get()
            batch: list[tuple[Operation, asyncio.Future[Any]]] = []
            while item is not None:
                if not item[1].done():  # a caller that is gone (cancelled) has its operation dropped
                    batch.append(item)
                if len(batch) == MAX_BATCH or self._queue.empty():
                    break
                item = self._queue.get_nowait()
            stopping = item is None
            if batch:
                await self._commit(batch)

    async def _commit(self, batch: list[tuple[Operation, asyncio.Future[Any]]]) -> None:
        try:
            outcomes = await self._writer.run(_run_batch, [operation for operation, _ in batch])
        except Exception as exc:  # noqa: BLE001 - the whole batch failed: every caller hears why
            outcomes = [(False, exc)] * len(batch)
        for (_, future), (ok, value) in zip(batch, outcomes, strict=True):
            if future.done():  # the caller was cancelled; its operation ran all the same
                continue
            if ok:
                future.set_result(value)
            else:
                future.set_exception(value)
