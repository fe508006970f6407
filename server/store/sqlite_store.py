"""The embedded store: SQLite in WAL mode.

Two connections: a writer, in a process of its own (server.store.sqlite_process),
whose transactions run one at a time (`BEGIN IMMEDIATE`, so writers in other
processes wait on SQLite's busy timeout rather than fail) and carry the writes
waiting at that moment together (server.store.sqlite_batches); and a reader, on
a thread of its own (server.store.sqlite_thread), whose snapshots never see a
write before it commits. Each operation of server.store.sqlite_operations runs
whole on one of them, in one trip from the event loop.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from server.access import Principal
from server.errors import DomainError, StoreFull, StoreUnavailable
from server.store import sqlite_operations as operations
from server.store.models import (
    ApiRecord,
    AuditPage,
    AuditQuery,
    KeyChanges,
    KeyRecord,
    KeyVerification,
    NewKey,
    PermissionEntry,
    RoleRecord,
    RootKeyRecord,
    ScopesUpdate,
    Written,
)
from server.store.root_keys import admit
from server.store.snapshot import StoreSnapshot
from server.store.sqlite_batches import WriteBatcher
from server.store.sqlite_process import SqliteProcess
from server.store.sqlite_steps import current_revision, migrate, require_revision, rollback, store_faults
from server.store.sqlite_thread import SqliteThread, connect
from server.store.verify_cache import CacheLimits, VerifyCache
from server.store.wal_index import CommitMark
from server.validation import ScopeSpec

__all__ = ["SqliteStore"]

T = TypeVar("T")

DEFAULT_LIMITS = CacheLimits()
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


def _prepare(path: Path, pragmas: tuple[str, ...], timeout_seconds: float) -> None:
    """WAL mode and the latest schema, waiting out (up to `timeout_seconds`) other processes preparing the file.

    Switching a new file to WAL needs an exclusive lock, and SQLite does not call the busy handler for every
    lock that step takes: a process that opens the file while another one switches or migrates it can get
    SQLITE_BUSY at once, busy_timeout or not. Preparing is idempotent, so a busy attempt is simply made again.
    """
    deadline = time.monotonic() + timeout_seconds
    pause = 0.001
    while True:
        try:
            db = connect(path, pragmas)
            try:
                db.execute("PRAGMA journal_mode = WAL").fetchall()
                migrate(db)
            finally:
                db.close()
            return
        except sqlite3.OperationalError as exc:
            busy = (getattr(exc, "sqlite_errorcode", 0) & 0xFF) in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
            if not busy or time.monotonic() + pause > deadline:
                raise
        time.sleep(pause)
        pause = min(pause * 2, 0.05)


def _read_transaction(db: sqlite3.Connection, fn: Callable[..., T], args: tuple[Any, ...]) -> T:
    db.execute("BEGIN")
    try:
        return fn(db, *args)
    finally:
        rollback(db)


class SqliteStore:
    """Implements server.store.interface.Store. Open with `await SqliteStore.open(path)`."""

    def __init__(
        self, path: Path, writer: SqliteProcess, reader: SqliteThread, monitor: sqlite3.Connection, limits: CacheLimits
    ) -> None:
        self.path = path
        self._writer = writer
        self._reader = reader
        self._batches = WriteBatcher(writer)
        # Used on the event loop's thread: has anything been committed since the cache last caught up (a mark
        # in shared memory), and if so, the change log since the cache's revision (one read on `monitor`).
        self._monitor = monitor
        self._commits = CommitMark(path, monitor)
        self._mark: bytes | int | None = None
        self.cache = VerifyCache(limits)
        self._closed = False
        self._identity = _identity(path)
        # What keeps writes from working now (disk full, file read-only or gone), as `probe` last found it.
        self._fault: DomainError | None = None

    # -- lifecycle ---------------------------------------------------------

    @classmethod
    async def open(
        cls, path: str | Path, *, busy_timeout_ms: int = DEFAULT_BUSY_TIMEOUT_MS, cache: CacheLimits = DEFAULT_LIMITS
    ) -> SqliteStore:
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
        return cls(path, writer, reader, monitor, cache)

    @staticmethod
    async def prepare(path: str | Path, *, busy_timeout_ms: int = DEFAULT_BUSY_TIMEOUT_MS) -> None:
        """What `open` does to the file first, and the supervisor of several workers before they open it: WAL mode
        (a setting of the file), and the schema migrated to the latest version."""
        with store_faults():
            await asyncio.to_thread(_prepare, Path(path), _pragmas(busy_timeout_ms), busy_timeout_ms / 1000)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        # Work already sent runs first: the writer process and the reader thread close their connections after it.
        await self._batches.close()
        await asyncio.gather(self._writer.close(), self._reader.close())
        self._commits.close()
        self._monitor.close()

    async def _write(self, fn: Callable[..., T], *args: Any) -> T:
        self._check_open()
        if self._fault is not None:
            raise self._fault  # until a probe finds the fault gone: refused at once, nothing attempted
        try:
            with store_faults():
                result: T = await self._batches.submit(fn, args)
                return result
        except StoreFull as full:
            self._fault = full
            raise

    async def probe(self) -> DomainError | None:
        """Check that the store can take writes (its file is there, writable, with room); the fault if not.

        Writes are refused with that fault until a later probe finds it gone, so a server recovers on its own
        once the disk has room again or the file is back. Reads go on meanwhile.
        """
        try:
            self._check_open()
            with store_faults():
                await self._writer.run(_probe, self.path, self._identity)
            self._fault = None
        except (StoreFull, StoreUnavailable) as fault:
            self._fault = fault
        return self._fault

    async def _read(self, fn: Callable[..., T], *args: Any) -> T:
        self._check_open()
        with store_faults():
            return await self._reader.run(_read_transaction, fn, args)

    async def _read_one_statement(self, fn: Callable[..., T], *args: Any) -> T:
        """For reads of one statement, which is a snapshot by itself: no BEGIN and ROLLBACK around it."""
        self._check_open()
        with store_faults():
            return await self._reader.run(fn, *args)

    def _catch_up(self, min_revision: int) -> None:
        """Bring the cache up to every change committed so far, by any process; then check `min_revision`."""
        self._check_open()
        # The mark is read before the changes, so a commit in between shows at the next call; it is kept only
        # once the changes are applied, so a failed catch-up is tried again.
        with store_faults():
            mark = self._commits.read()
            if mark != self._mark or min_revision > self.cache.seen:
                self.cache.apply(*operations.changes_since(self._monitor, self.cache.seen))
                self._mark = mark
        require_revision(self.cache.seen, min_revision)

    def _check_open(self) -> None:
        if self._closed:
            raise StoreUnavailable("the store is closed")

    async def revision(self) -> int:
        return await self._read(current_revision)

    # -- root keys -----------------------------------------------------------

    async def create_root_key(
        self, name: str, secret_hash: bytes, permissions: Sequence[str], expires_ms: int | None = None
    ) -> RootKeyRecord:
        return await self._write(operations.create_root_key, name, secret_hash, tuple(permissions), expires_ms)

    async def set_root_key_enabled(self, root_key_id: str, enabled: bool) -> None:
        await self._write(operations.set_root_key_enabled, root_key_id, enabled)

    async def delete_root_key(self, root_key_id: str) -> None:
        await self._write(operations.delete_root_key, root_key_id)

    async def list_root_keys(self) -> list[RootKeyRecord]:
        return await self._read(operations.list_root_keys)

    async def authenticate(self, secret_hash: bytes, now_ms: int, request_id: str = "") -> Principal:
        self._catch_up(0)
        grant = self.cache.root(secret_hash)
        if grant is None:
            grant = await self._read_one_statement(operations.root_key_grant, secret_hash)
            if grant is not None:
                self.cache.put_root(secret_hash, grant)
        return admit(grant, now_ms, request_id)

    # -- APIs -------------------------------------------------------------------

    async def create_api(self, principal: Principal, name: str, scopes: Sequence[ScopeSpec]) -> Written[ApiRecord]:
        return await self._write(operations.create_api, principal, name, tuple(scopes))

    async def get_api(self, principal: Principal, api_id: str, min_revision: int = 0) -> ApiRecord:
        return await self._read(operations.get_api, principal, api_id, min_revision)

    async def update_scopes(
        self,
        principal: Principal,
        api_id: str,
        scopes: Sequence[ScopeSpec],
        etag: str = "",
        validate_only: bool = False,
    ) -> ScopesUpdate:
        return await self._write(operations.update_scopes, principal, api_id, tuple(scopes), etag, validate_only)

    # -- keys -------------------------------------------------------------------

    async def create_key(self, principal: Principal, new: NewKey) -> Written[KeyRecord]:
        return await self._write(operations.create_key, principal, new)

    async def get_key(self, principal: Principal, key_id: str, min_revision: int = 0) -> KeyRecord:
        return await self._read(operations.get_key, principal, key_id, min_revision)

    async def update_key(
        self, principal: Principal, key_id: str, changes: KeyChanges, etag: str = ""
    ) -> Written[KeyRecord]:
        return await self._write(operations.update_key, principal, key_id, changes, etag)

    async def delete_key(self, principal: Principal, key_id: str) -> int:
        return await self._write(operations.delete_key, principal, key_id)

    async def set_permissions(
        self, principal: Principal, key_id: str, names: Sequence[str], etag: str = "", validate_only: bool = False
    ) -> Written[tuple[PermissionEntry, ...]]:
        return await self._write(operations.set_permissions, principal, key_id, tuple(names), etag, validate_only)

    async def set_roles(
        self, principal: Principal, key_id: str, role_names: Sequence[str], etag: str = ""
    ) -> Written[KeyRecord]:
        return await self._write(operations.set_roles, principal, key_id, tuple(role_names), etag)

    async def verify_key(self, secret_hash: bytes, min_revision: int = 0) -> KeyVerification | None:
        self._catch_up(min_revision)
        found = self.cache.key(secret_hash)
        if found is None:
            found = await self._read_one_statement(operations.verify_key, secret_hash, min_revision)
            if found is not None:
                self.cache.put_key(secret_hash, found)
        return found

    # -- roles -------------------------------------------------------------------

    async def create_role(
        self, principal: Principal, api_id: str, name: str, description: str, permissions: Sequence[str]
    ) -> Written[RoleRecord]:
        return await self._write(operations.create_role, principal, api_id, name, description, tuple(permissions))

    async def get_role(self, principal: Principal, role_id: str, min_revision: int = 0) -> RoleRecord:
        return await self._read(operations.get_role, principal, role_id, min_revision)

    async def set_role_permissions(
        self, principal: Principal, role_id: str, names: Sequence[str], etag: str = ""
    ) -> Written[RoleRecord]:
        return await self._write(operations.set_role_permissions, principal, role_id, tuple(names), etag)

    # -- the audit trail -------------------------------------------------------------

    async def list_audit_events(self, principal: Principal, query: AuditQuery) -> AuditPage:
        return await self._read(operations.list_audit_events, principal, query)

    # -- the whole store -------------------------------------------------------------

    async def export_snapshot(self) -> StoreSnapshot:
        return await self._read(operations.export_snapshot)
