"""The `postgres-raw` scenarios: the PostgreSQL engine's ceiling, SetPermissions' transaction through asyncpg and no
gRPC, as `sqlite-raw` is SQLite's.

The transaction is sqlite-raw's (the key's direct permissions replaced by 5, the revision bumped, the key marked
changed, a change-log row and an audit event), in the engine's SQL and behind the engine's lock on the revision row
(keyscope_server.store.postgresql.batches.BEGIN_WRITE), so that writes commit one at a time, in the order of their
revisions.
Two shapes, each with `concurrency` callers on a pool of min(concurrency, 100) connections, on a copy of the seeded
database:
  postgres-raw          one transaction per write, each on a connection of its own while it runs;
  postgres-raw-grouped  group commit as the engine does it (keyscope_server.store.group_commit): the writes waiting
                        at one moment (up to 128) share one transaction on one connection, with no savepoint
                        between them.
Its CPU is that of this process, which runs the callers; the database's (its backends') is given beside it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import asyncpg
from bench_load import NAMES_PER_WRITE, summarize
from bench_seed import Workload
from bench_server import tree_cpu_seconds
from bench_sqlite_raw import AUDIT_STATE

from keyscope_server.store.engine import ChangeRecord, Links
from keyscope_server.store.group_commit import MAX_BATCH
from keyscope_server.store.models import AuditEventRecord
from keyscope_server.store.postgresql.batches import BEGIN_WRITE
from keyscope_server.store.postgresql.changes import PostgresChanges

__all__ = ["SHAPES", "PostgresRaw", "postgres_raw"]

_STATE = json.loads(AUDIT_STATE)  # the key before and after, as its audit event holds it
MAX_POOL = 100  # of the cluster's 200 connections, the rest are the servers'

SetPermissions = tuple[str, list[str], int]  # key id, permission ids, time in ms
WriteCall = Callable[[SetPermissions], Awaitable[None]]  # a write, returning once it has committed
Waiting = asyncio.Queue[tuple[SetPermissions, asyncio.Future[None]]]  # the writes for the next batch


async def _set_permissions(conn: asyncpg.Connection, key_id: str, permission_ids: list[str], now: int) -> None:
    """The write's statement, the engine's own, inside a transaction that holds the revision row's lock."""
    event = AuditEventRecord(
        0, now, "root_bench", "SetPermissions", "key", key_id, "api", _STATE, _STATE, (), "req_bench"
    )
    links = Links("key_permissions", key_id, permission_ids)
    await PostgresChanges(conn).record(ChangeRecord([("key", key_id)], {"key": [key_id]}, now, event, [links]))


async def _in_write_transaction(conn: asyncpg.Connection, body: Callable[[], Awaitable[None]]) -> None:
    await conn.execute(BEGIN_WRITE)  # BEGIN and the lock in one round trip, as the engine does
    try:
        await body()
        await conn.execute("COMMIT")
    finally:
        if not conn.is_closed() and conn.is_in_transaction():
            await conn.execute("ROLLBACK")


@contextlib.asynccontextmanager
async def _one_per_write(pool: asyncpg.Pool) -> AsyncIterator[WriteCall]:
    async def write(call: SetPermissions) -> None:
        async with pool.acquire() as conn:
            await _in_write_transaction(conn, functools.partial(_set_permissions, conn, *call))

    yield write


async def _run_batch(conn: asyncpg.Connection, batch: list[SetPermissions]) -> None:
    for call in batch:  # with no savepoint between them, as the engine runs a batch until a write fails
        await _set_permissions(conn, *call)


async def _commit_batches(pool: asyncpg.Pool, queue: Waiting) -> None:
    """One batch at a time, of the writes waiting when it starts, as keyscope_server.store.group_commit commits them."""
    while True:
        waiting = [await queue.get()]
        while len(waiting) < MAX_BATCH and not queue.empty():
            waiting.append(queue.get_nowait())
        batch = [call for call, _ in waiting]
        try:
            async with pool.acquire() as conn:
                await _in_write_transaction(conn, functools.partial(_run_batch, conn, batch))
        except Exception as exc:  # noqa: BLE001 - every caller of the batch hears it
            for _, done in waiting:
                done.set_exception(exc)
        else:
            for _, done in waiting:
                done.set_result(None)


@contextlib.asynccontextmanager
async def _group_committed(pool: asyncpg.Pool) -> AsyncIterator[WriteCall]:
    queue: Waiting = asyncio.Queue()
    committer = asyncio.create_task(_commit_batches(pool, queue), name="bench-raw-batches")

    async def write(call: SetPermissions) -> None:
        done = asyncio.get_running_loop().create_future()
        queue.put_nowait((call, done))
        await done

    try:
        yield write
    finally:
        committer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await committer


# The raw scenarios, each by how its writes reach the database.
SHAPES: dict[str, Callable[[asyncpg.Pool], contextlib.AbstractAsyncContextManager[WriteCall]]] = {
    "postgres-raw": _one_per_write,
    "postgres-raw-grouped": _group_committed,
}


@dataclass
class PostgresRaw:
    """The pool and the event loop the rounds share; `measure(scenario, seconds)` is a round."""

    runner: asyncio.Runner
    pool: asyncpg.Pool
    workload: Workload
    concurrency: int
    database_pid: int
    rng: random.Random

    def measure(self, scenario: str, seconds: float) -> dict[str, Any]:
        return self.runner.run(self._drive(scenario, seconds))

    def _next_call(self) -> SetPermissions:
        key_id = self.rng.choice(self.workload.key_ids)
        return key_id, self.rng.sample(self.workload.permission_ids, NAMES_PER_WRITE), int(time.time() * 1000)

    async def _drive(self, scenario: str, seconds: float) -> dict[str, Any]:
        latencies: list[float] = []
        async with SHAPES[scenario](self.pool) as write:
            cpu_start, db_cpu_start = time.process_time(), tree_cpu_seconds(self.database_pid)
            started = time.perf_counter()
            deadline = started + seconds

            async def caller() -> None:
                while (start := time.perf_counter()) < deadline:
                    await write(self._next_call())
                    latencies.append(time.perf_counter() - start)

            await asyncio.gather(*(caller() for _ in range(self.concurrency)))
            elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_start
            db_cpu = tree_cpu_seconds(self.database_pid) - db_cpu_start
        return {**summarize(latencies, elapsed, cpu), "db_cpu_us_per_req": db_cpu / len(latencies) * 1e6}


async def _open_pool(url: str, size: int) -> asyncpg.Pool:
    pool = await asyncpg.create_pool(url, min_size=size, max_size=size)
    assert pool is not None
    return pool


@contextlib.contextmanager
def postgres_raw(
    url: str, workload: Workload, concurrency: int, database_pid: int, rng: random.Random
) -> Iterator[PostgresRaw]:
    """The raw scenarios' pool of min(concurrency, 100) connections to `url`, open until the block ends."""
    with asyncio.Runner() as runner:
        pool = runner.run(_open_pool(url, min(concurrency, MAX_POOL)))
        try:
            yield PostgresRaw(runner, pool, workload, concurrency, database_pid, rng)
        finally:
            runner.run(pool.close())
