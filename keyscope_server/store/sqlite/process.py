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
for a child that is started once. The child's side is in writer.py. When a store
closes, its child closes the database and is kept (one at most) for the next store
the process opens. If the child dies, the call in progress fails with
StoreUnavailable and the next call starts a new one.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import subprocess
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.connection import Connection, Pipe
from pathlib import Path
from typing import Any, TypeVar

from keyscope_server.errors import StoreUnavailable

__all__ = ["SqliteProcess"]

log = logging.getLogger(__name__)

T = TypeVar("T")

STOP_SECONDS = 10.0  # how long `close` waits for the child to close its database, and an ending child to exit
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
        kept = _KEPT.take()
        if kept is not None and self._open(kept):
            return
        if not self._open(_spawn()):
            log.error("the store's writer process ended as it started")
            raise StoreUnavailable()

    def _open(self, child: Child) -> bool:
        """`child` serving this store's database; False if it has ended (it is forgotten)."""
        self._process, self._conn = child
        try:
            self._conn.send((self._path, self._pragmas))
            ok, value = self._conn.recv()
        except (BrokenPipeError, ConnectionResetError, EOFError):
            self._forget_child()
            return False
        if not ok:
            self._process, self._conn = None, None
            _KEPT.keep(child)  # it opened nothing: another store may use it
            raise value
        return True

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
        if self._process is not None and self._conn is not None:
            _end((self._process, self._conn), kill=True)
        self._process, self._conn = None, None

    def _stop(self) -> None:
        """Close the store's connection in the child, after the work already sent; then keep the child for the next
        store this process opens, or end it."""
        if self._conn is None:
            return
        try:
            self._conn.send(None)
            if not self._conn.poll(STOP_SECONDS):
                log.error("the store's writer process did not close its database within %.0f s; killed", STOP_SECONDS)
                closed = False
            else:
                closed = self._conn.recv() == (True, None)
        except (BrokenPipeError, ConnectionResetError, EOFError):
            closed = False  # it had ended: nothing to close
        if not closed:
            self._forget_child()
            return
        assert self._process is not None
        child = (self._process, self._conn)
        self._process, self._conn = None, None
        _KEPT.keep(child)


Child = tuple["subprocess.Popen[bytes]", Connection]


def _spawn() -> Child:
    ours, theirs = Pipe()
    try:
        process = subprocess.Popen(
            [sys.executable, "-c", _CHILD, str(theirs.fileno())], stdin=subprocess.DEVNULL, pass_fds=[theirs.fileno()]
        )
    except BaseException:
        ours.close()
        raise
    finally:
        theirs.close()
    return process, ours


def _end(child: Child, *, kill: bool = False) -> None:
    """Close the child's pipe, which ends a child with no database open, and reap it; `kill`: at once."""
    process, conn = child
    conn.close()
    if kill and process.poll() is None:
        process.kill()
    try:
        process.wait(STOP_SECONDS)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


class _Kept:
    """At most one child whose store has closed, kept for the next store this process opens: a new interpreter
    takes about 60 ms to start and import the store's rules, which a program that opens many stores (the test
    suite opens thousands) would pay at each. A server opens one store, and closes it as it exits. The kept
    child has no database open; it ends with this process (atexit), or when this process dies (its pipe closes)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._child: Child | None = None

    def take(self) -> Child | None:
        with self._lock:
            child, self._child = self._child, None
        if child is not None and (child[0].poll() is not None or child[1].poll()):  # it ended meanwhile
            _end(child)
            return None
        return child

    def keep(self, child: Child) -> None:
        """Keep `child`, or end it if one is kept already."""
        with self._lock:
            full = self._child is not None
            if not full:
                self._child = child
        if full:
            _end(child)

    def end(self) -> None:
        child = self.take()
        if child is not None:
            _end(child)


_KEPT = _Kept()
atexit.register(_KEPT.end)
