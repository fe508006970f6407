"""The SQLite engine: one file in WAL mode, nothing to run beside the server.

Two connections: a writer, in a process of its own (keyscope_server.store.sqlite.process),
whose transactions run one at a time (`BEGIN IMMEDIATE`, so writers in other
processes wait on SQLite's busy timeout rather than fail) and carry the writes
waiting at that moment together (keyscope_server.store.group_commit); and a reader, on
a thread of its own (keyscope_server.store.sqlite.thread), whose snapshots never see a
write before it commits. Every rule runs whole on one of them, in one
transaction and one trip from the event loop. A third connection, on the event
loop's thread, reads the change log when the commit mark
(keyscope_server.store.sqlite.commit_mark) says something was committed, and
VerifyKey's and authentication's lookups of a secret the cache does not hold: one
indexed statement each (about 25 µs), which cost more through the reader's thread
(the hand-over, and the interpreter lock taken back at each step) than they take.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
from collections.abc import Callable, Hashable
from pathlib import Path
from typing import Any, TypeVar

from keyscope_server.errors import DomainError, StoreFull, StoreUnavailable
from keyscope_server.store.engine import ChangesSince, FirstRead, Rule
from keyscope_server.store.group_commit import GroupCommit, Outcome, Write
from keyscope_server.store.models import KeyVerification, RootKeyGrant
from keyscope_server.store.snapshot import ImportProgress, StoreSnapshot
from keyscope_server.store.sqlite import snapshot
from keyscope_server.store.sqlite.batches import run_batch
from keyscope_server.store.sqlite.changes import changes_since
from keyscope_server.store.sqlite.commit_mark import CommitMark
from keyscope_server.store.sqlite.connection import connect, rollback, run_to_end, store_faults
from keyscope_server.store.sqlite.keys import find_key
from keyscope_server.store.sqlite.process import SqliteProcess
from keyscope_server.store.sqlite.root_keys import find_root_key
from keyscope_server.store.sqlite.schema import prepare
from keyscope_server.store.sqlite.tables import SqliteTables
from keyscope_server.store.sqlite.thread import SqliteThread

__all__ = ["DEFAULT_BUSY_TIMEOUT_MS", "RESERVE_PAGES", "SqliteEngine", "read_transaction"]

T = TypeVar("T")

DEFAULT_BUSY_TIMEOUT_MS = 5000

# Below this much room the store counts as full: writes are refused before SQLite fails halfway.
RESERVE_PAGES = 16
RESERVE_BYTES = 1 << 20


def _identity(path: Path) -> tuple[int, int]:
    status = os.stat(path)
    return status.st_dev, status.st_ino


def _probe(db: sqlite3.Connection, path: Path, identity: tuple[int, int]) -> None:
    """Raise the fault that keeps the store from taking writes now, if any."""
    try:
        if _identity(path) != identity:
            raise StoreUnavailable("the database file was replaced; restart the server to use the new file")
    except FileNotFoundError:
        raise StoreUnavailable("the database file is missing; put it back to resume") from None
    if not os.access(path, os.W_OK):
        raise StoreUnavailable("the database file is read-only; make it writable to resume")
    pages, limit, free = (
        db.execute(f"PRAGMA {name}").fetchone()[0] for name in ("page_count", "max_page_count", "freelist_count")
    )
    disk = os.statvfs(path)
    if limit - pages + free < RESERVE_PAGES or disk.f_bavail * disk.f_frsize < RESERVE_BYTES:
        raise StoreFull()


def _pragmas(busy_timeout_ms: int) -> tuple[str, ...]:
    return (f"busy_timeout = {int(busy_timeout_ms)}", "foreign_keys = ON", "synchronous = FULL")


def _in_snapshot(db: sqlite3.Connection, read: Callable[[sqlite3.Connection], T]) -> T:
    """`read(db)` in one read transaction: one snapshot of committed data."""
    db.execute("BEGIN")
    try:
        return read(db)
    finally:
        rollback(db)


def read_transaction(db: sqlite3.Connection, rule: Rule[T], args: tuple[Any, ...]) -> T:
    return _in_snapshot(db, lambda db: run_to_end(rule(SqliteTables(db), *args)))


def _import(db: sqlite3.Connection, whole: StoreSnapshot, progress: ImportProgress | None) -> None:
    db.execute("BEGIN IMMEDIATE")
    try:
        snapshot.import_snapshot(db, whole, progress)
        db.execute("COMMIT")
    finally:
        rollback(db)


class SqliteEngine:
    """Implements keyscope_server.store.engine.Engine. Open with `await SqliteEngine.open(path)`."""

    def __init__(self, path: Path, writer: SqliteProcess, reader: SqliteThread, monitor: sqlite3.Connection) -> None:
        self.path = path
        self._writer = writer
        self._reader = reader
        # The writer process takes its calls in order, and runs batches that wait in its pipe together as one: under 64
        # concurrent SetPermissions, 1701 req/s with 2 batches in flight, 1767 with 4 (scripts/bench, 2026-12-04).
        self.batches = GroupCommit(self._run_batch, depth=4)
        # Used on the event loop's thread: has anything been committed since the cache last caught up (a mark
        # in shared memory), and if so, the change log since the cache's revision (one read on `monitor`).
        self._monitor = monitor
        self._commits = CommitMark(path, monitor)
        self._closed = False
        self._identity = _identity(path)

    # -- lifecycle ---------------------------------------------------------

    @classmethod
    async def open(cls, path: str | Path, *, busy_timeout_ms: int = DEFAULT_BUSY_TIMEOUT_MS) -> SqliteEngine:
        path = Path(path)
        pragmas = _pragmas(busy_timeout_ms)
        opened: list[SqliteProcess | SqliteThread] = []
        try:
            await cls.prepare(path, busy_timeout_ms=busy_timeout_ms)
            with store_faults():
                reader = await SqliteThread.open(path, pragmas, "reader")
                opened.append(reader)
                writer = await SqliteProcess.open(path, pragmas, "writer")
                opened.append(writer)
                monitor = sqlite3.connect(path, isolation_level=None)
        except BaseException:
            for connection in opened:
                await connection.close()
            raise
        return cls(path, writer, reader, monitor)

    @staticmethod
    async def prepare(path: str | Path, *, busy_timeout_ms: int = DEFAULT_BUSY_TIMEOUT_MS) -> None:
        """What `open` does to the file first, and the supervisor of several workers before they open it: WAL mode
        (a setting of the file), and the schema migrated to the latest version."""
        with store_faults():
            await asyncio.to_thread(prepare, Path(path), _pragmas(busy_timeout_ms), busy_timeout_ms / 1000)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        # Work already sent runs first: the writer process and the reader thread close their connections after it.
        await self.batches.close()
        await asyncio.gather(self._writer.close(), self._reader.close())
        self._commits.close()
        self._monitor.close()

    def _check_open(self) -> None:
        if self._closed:
            raise StoreUnavailable("the store is closed")

    async def probe(self) -> DomainError | None:
        try:
            self._check_open()
            with store_faults():
                await self._writer.run(_probe, self.path, self._identity)
        except (StoreFull, StoreUnavailable) as fault:
            return fault
        return None

    # -- transactions ---------------------------------------------------------

    async def _run_batch(self, writes: list[Write]) -> list[Outcome]:
        return await self._writer.run(run_batch, writes)

    async def write(self, rule: Rule[T], *args: Any, dry_run: bool = False, first_read: FirstRead | None = None) -> T:
        self._check_open()
        with store_faults():
            result: T = await self.batches.submit((rule, args, dry_run, None))
            return result

    async def read(self, rule: Rule[T], *args: Any) -> T:
        self._check_open()
        with store_faults():
            return await self._reader.run(read_transaction, rule, args)

    # -- the hot path: one statement each, which is a snapshot by itself (no BEGIN and ROLLBACK around it), on the
    # event loop's thread: through the reader's, a verify-cold call took 733 µs of the server's CPU and ran at 0.43-0.49
    # of bare gRPC's rate in `scripts/bench`; here, 443 µs and 0.62.

    async def find_key(self, secret_hash: bytes) -> KeyVerification | None:
        self._check_open()
        with store_faults():
            return find_key(self._monitor, secret_hash)

    async def find_root_key(self, secret_hash: bytes) -> RootKeyGrant | None:
        self._check_open()
        with store_faults():
            return find_root_key(self._monitor, secret_hash)

    async def commit_mark(self) -> Hashable:
        self._check_open()
        return self._commits.read()

    async def changes_since(self, revision: int) -> ChangesSince:
        self._check_open()
        with store_faults():
            return changes_since(self._monitor, revision)

    # -- the whole store ---------------------------------------------------------

    async def export_snapshot(self) -> StoreSnapshot:
        self._check_open()
        with store_faults():
            return await self._reader.run(_in_snapshot, snapshot.export_snapshot)

    async def import_snapshot(self, whole: StoreSnapshot, progress: ImportProgress | None = None) -> None:
        self._check_open()
        with store_faults():
            # On a connection of its own rather than the writer process: a large snapshot need not cross a pipe.
            await asyncio.to_thread(_import_into, self.path, whole, progress)


def _import_into(path: Path, whole: StoreSnapshot, progress: ImportProgress | None) -> None:
    db = connect(path, _pragmas(DEFAULT_BUSY_TIMEOUT_MS))
    try:
        _import(db, whole, progress)
    finally:
        db.close()
