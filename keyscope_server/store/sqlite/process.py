"""A sqlite3 connection in a process of its own: the store's writer.

The same interface as keyscope_server.store.sqlite.thread.SqliteThread (`open`, `run`,
`close`), but `fn(connection, *args)` runs in a child process, so the writer's
Python work and SQLite's never wait on the event loop's interpreter lock.
In one process, each of the writer's statements gave the lock back to the
event loop and then waited to get it again: under 64 concurrent SetPermissions
the writer spent 57% of its time waiting, and writes topped out near 550/s on
a 2-core machine; in a process of its own, near 800/s (see the README's
Performance section).

Functions and arguments cross the pipe pickled, so a function must be a
module-level one; results and exceptions come back the same way. The child is a
new interpreter that runs keyscope_server.store.sqlite.writer, started with
subprocess (fork and exec at once, which is safe beside gRPC's threads) and
reached over a socket pair. Not multiprocessing's fork server: it and the resource
tracker it starts are two more processes per server (43 MB of RSS of their own),
for a child that is started once. The child's side is in writer.py. If the child
dies, the call in progress fails with StoreUnavailable and the next call starts a
new one.
"""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.connection import Connection, Pipe
from pathlib import Path
from typing import Any, TypeVar

from keyscope_server.errors import StoreUnavailable

__all__ = ["SqliteProcess"]

log = logging.getLogger(__name__)

T = TypeVar("T")

STOP_SECONDS = 10.0  # how long `close` waits for the child to finish its work and exit
# The child's program: the fd of its end of the socket pair is its one argument.
_CHILD = "import sys; from keyscope_server.store.sqlite.writer import main; main(int(sys.argv[1]))"


class SqliteProcess:
    def __init__(self, path: Path, pragmas: tuple[str, ...], name: str) -> None:
        self._path = path
        self._pragmas = pragmas
        self._name = name
        # One thread does the blocking pipe traffic, so calls run one at a time, in order, as on SqliteThread.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"keyscope-sqlite-{name}")
        self._process: subprocess.Popen[bytes] | None = None
        self._conn: Connection | None = None

    @classmethod
    async def open(cls, path: Path, pragmas: tuple[str, ...], name: str) -> SqliteProcess:
        opened = cls(path, pragmas, name)
        try:
            await asyncio.get_running_loop().run_in_executor(opened._executor, opened._start)
        except BaseException:
            opened._executor.shutdown(wait=False)
            raise
        return opened

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """`fn(connection, *args)` in the child. Once started it runs to its end, even if the caller is
        cancelled."""
        ok, value = await asyncio.get_running_loop().run_in_executor(self._executor, self._call, fn, args)
        if not ok:
            raise value
        result: T = value
        return result

    async def close(self) -> None:
        """Close the connection after the work already sent, and let the child and the thread end."""
        try:
            await asyncio.get_running_loop().run_in_executor(self._executor, self._stop)
        finally:
            self._executor.shutdown(wait=False)

    # -- on the executor's thread -------------------------------------------------------------------------

    def _start(self) -> None:
        ours, theirs = Pipe()
        try:
            process = subprocess.Popen(
                [sys.executable, "-c", _CHILD, str(theirs.fileno())],
                stdin=subprocess.DEVNULL,
                pass_fds=[theirs.fileno()],
            )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        self._process, self._conn = process, ours
        try:
            ours.send((self._path, self._pragmas))
        except (BrokenPipeError, ConnectionResetError):
            pass  # the child is gone already: _receive says so
        ok, value = self._receive()
        if not ok:
            self._stop()
            raise value

    def _call(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> tuple[bool, Any]:
        if self._conn is not None and self._conn.poll():  # between calls, only a closed pipe is readable
            log.error("the store's writer process ended unexpectedly (exit code %s)", self._exit_code())
            self._forget_child()
        if self._conn is None:
            self._start()  # the last child died: a new one, on the same file
        assert self._conn is not None
        try:
            self._conn.send((fn, args))
        except (BrokenPipeError, ConnectionResetError):
            self._forget_child()
            raise StoreUnavailable() from None
        return self._receive()

    def _receive(self) -> tuple[bool, Any]:
        assert self._conn is not None
        try:
            outcome: tuple[bool, Any] = self._conn.recv()
        except (EOFError, ConnectionResetError):
            log.error("the store's writer process ended unexpectedly (exit code %s)", self._exit_code())
            self._forget_child()
            raise StoreUnavailable() from None
        return outcome

    def _exit_code(self) -> int | None:
        if self._process is None:
            return None
        try:
            return self._process.wait(1.0)
        except subprocess.TimeoutExpired:
            return None

    def _forget_child(self) -> None:
        if self._conn is not None:
            self._conn.close()
        if self._process is not None:
            if self._process.poll() is None:
                self._process.kill()
            self._process.wait()
        self._process, self._conn = None, None

    def _stop(self) -> None:
        if self._conn is not None:
            try:
                self._conn.send(None)
            except (BrokenPipeError, ConnectionResetError):
                pass
        if self._process is not None:
            try:
                self._process.wait(STOP_SECONDS)
            except subprocess.TimeoutExpired:
                log.error("the store's writer process did not end within %.0f s of its stop; killed", STOP_SECONDS)
        self._forget_child()
