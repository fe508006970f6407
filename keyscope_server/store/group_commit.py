"""Group commit, the part every engine shares: the writes waiting at one moment go to the engine as one batch.

An engine gives `run(writes)`, which runs a batch in one transaction (each write
in a savepoint of its own, so that one that fails leaves no trace while the
others go on) and returns one outcome per write, in order. Only after that
commit does any caller hear that its write succeeded. Writes keep their arrival
order, and each still bumps the store-wide revision by itself. If the batch
fails as a whole (its commit, its connection), every write of it fails with
that error and nothing of it is written. A write whose caller has already gone
(a cancelled call, a passed deadline) is not started.

Each batch is reported to the `observer`, if one is set (its size, and the seconds from its hand-over to the engine
to its outcomes: its transaction, and with a depth over 1 the wait behind the batch before it), for
whoever measures them (keyscope_server.metrics): the store layer knows no metrics library.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from keyscope_server.store.engine import FirstRead, Rule

__all__ = ["MAX_BATCH", "BatchObserver", "GroupCommit", "Outcome", "Write"]

MAX_BATCH = 128

# (rule, its arguments after the tables, dry run, what the rule reads first if known: engine.FirstRead)
Write = tuple[Rule[Any], tuple[Any, ...], bool, FirstRead | None]
Outcome = tuple[bool, Any]  # (True, result) or (False, exception)
RunBatch = Callable[[list[Write]], Awaitable[list[Outcome]]]
BatchObserver = Callable[[int, float], None]  # (writes in the batch, seconds its transaction took)


class GroupCommit:
    """Hands writes to the engine's `run` in batches, from one task of its own.

    `depth`: how many batches may be in the engine's hands at once. An engine whose `run` calls go to one connection
    that takes them in order (SQLite's writer process) gives more than 1: the next batch is then already there when
    the last one commits, rather than the connection waiting idle while the last answers travel back and the next
    batch is formed. Each batch is still its own transaction, run after the one before it, and `run` is called in batch
    order (each call's first step, up to its first wait, runs in the order the calls were made)."""

    def __init__(self, run: RunBatch, *, depth: int = 1) -> None:
        self._run = run
        self._slots = asyncio.Semaphore(depth)
        self._in_flight: set[asyncio.Task[None]] = set()
        self._queue: asyncio.Queue[tuple[Write, asyncio.Future[Any]] | None] = asyncio.Queue()
        self._task = asyncio.create_task(self._drain(), name="keyscope-write-batches")
        self.observer: BatchObserver | None = None

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
            await self._slots.acquire()
            item = await self._queue.get()
            batch: list[tuple[Write, asyncio.Future[Any]]] = []
            while item is not None:
                if not item[1].done():  # a caller that is gone (cancelled) has its write dropped
                    batch.append(item)
                if len(batch) == MAX_BATCH or self._queue.empty():
                    break
                item = self._queue.get_nowait()
            stopping = item is None
            if not batch:
                self._slots.release()
                continue
            task = asyncio.create_task(self._commit(batch), name="keyscope-write-batch")
            self._in_flight.add(task)
            task.add_done_callback(self._done)
        if self._in_flight:
            await asyncio.wait(self._in_flight)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._in_flight.discard(task)
        self._slots.release()

    async def _commit(self, batch: list[tuple[Write, asyncio.Future[Any]]]) -> None:
        started = time.perf_counter()
        try:
            outcomes = await self._run([write for write, _ in batch])
        except Exception as exc:  # noqa: BLE001 - the whole batch failed: every caller hears why
            outcomes = [(False, exc)] * len(batch)
        for (_, future), (ok, value) in zip(batch, outcomes, strict=True):
            if future.done():  # the caller was cancelled; its write ran all the same
                continue
            if ok:
                future.set_result(value)
            else:
                future.set_exception(value)
        if self.observer is not None:
            self.observer(len(batch), time.perf_counter() - started)
