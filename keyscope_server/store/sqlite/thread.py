"""A sqlite3 connection and the one thread that uses it.

Work sent with `run` executes there in order, one call at a time, as one trip
from the event loop. (aiosqlite does the same for single statements but offers
no public way to run a whole function on its thread, which is what lets a
transaction take one trip instead of one per statement.)
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from keyscope_server.store.sqlite.connection import connect

__all__ = ["SqliteThread"]

T = TypeVar("T")


class SqliteThread:
    def __init__(self, executor: ThreadPoolExecutor, db: sqlite3.Connection) -> None:
        self._executor = executor
        self._db = db

    @classmethod
    async def open(cls, path: Path, pragmas: tuple[str, ...], name: str) -> SqliteThread:
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"keyscope-sqlite-{name}")
        try:
            db = await asyncio.get_running_loop().run_in_executor(executor, connect, path, pragmas)
        except BaseException:
            executor.shutdown(wait=False)
            raise
        return cls(executor, db)

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """`fn(connection, *args)` on the connection's thread. Once started it runs to its end, even if the
        caller is cancelled."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, self._db, *args)

    async def close(self) -> None:
        """Close the connection after the work already sent, and let the thread end."""
        try:
            await self.run(sqlite3.Connection.close)
        finally:
            self._executor.shutdown(wait=False)
