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
module-level one; results and exceptions come back the same way. Children are
forked from a fork server (multiprocessing's "forkserver", started once per
server process) that has this module loaded, so a store opens in milliseconds
and the child holds nothing of the parent (no gRPC, no sockets). The child
ignores SIGINT and SIGTERM, which a terminal or a service manager sends to the
whole process group: the server stops it, once the writes in flight are done,
by closing the pipe. If the child dies, the call in progress fails with
StoreUnavailable and the next call starts a new one.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import signal
import traceback
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, TypeVar

from keyscope_server.errors import DomainError, StoreUnavailable
from keyscope_server.store.sqlite.connection import connect

__all__ = ["SqliteProcess", "with_child_traceback"]

log = logging.getLogger(__name__)

T = TypeVar("T")

_CONTEXT = multiprocessing.get_context("forkserver")
# The children run the store's rules (keyscope_server.store.engine_store imports them all) in group-commit batches.
_CONTEXT.set_forkserver_preload(
    [__name__, "keyscope_server.store.sqlite.batches", "keyscope_server.store.engine_store"]
)

STOP_SECONDS = 10.0  # how long `close` waits for the child to finish its work and exit


def _serve(conn: Connection, path: Path, pragmas: tuple[str, ...]) -> None:
    """The child: open the connection, then run each (fn, args) received until the pipe closes or None comes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        db = connect(path, pragmas)
    except BaseException as exc:  # noqa: BLE001 - handed to the parent, which raises it
        _reply(conn, (False, exc))
        return
    _reply(conn, (True, None))
    try:
        while True:
            try:
                request = conn.recv()
            except (EOFError, OSError):
                break  # the parent is gone
            if request is None:
                break
            fn, args = request
            try:
                outcome: tuple[bool, Any] = (True, fn(db, *args))
            except BaseException as exc:  # noqa: BLE001 - handed to the parent, which raises it
                outcome = (False, with_child_traceback(exc))
            if not _reply(conn, outcome):
                break
    finally:
        db.close()


def with_child_traceback(exc: BaseException) -> BaseException:
    """`exc`, noted with its traceback in the child (a traceback does not cross the pipe) for the log, unless it
    is a domain error, meant for the caller rather than for whoever reads the log."""
    if not isinstance(exc, DomainError):
        exc.add_note(f"in the store's writer process:\n{''.join(traceback.format_exception(exc))}")
    return exc


def _reply(conn: Connection, outcome: tuple[bool, Any]) -> bool:
    """Send an outcome; one that cannot be pickled is replaced by an error that says so. False if the parent is
    gone."""
    try:
        conn.send(outcome)
    except (BrokenPipeError, EOFError, ConnectionResetError):
        return False
    except Exception as exc:  # noqa: BLE001 - a result or exception that does not pickle: a bug, reported
        error = RuntimeError(f"the writer process could not send its {'result' if outcome[0] else 'error'}: {exc!r}")
        if not outcome[0]:
            error.add_note("".join(traceback.format_exception(outcome[1])))
        conn.send((False, error))
    return True


class SqliteProcess:
    def __init__(self, path: Path, pragmas: tuple[str, ...], name: str) -> None:
        self._path = path
        self._pragmas = pragmas
        self._name = name
        # One thread does the blocking pipe traffic, so calls run one at a time, in order, as on SqliteThread.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"keyscope-sqlite-{name}")
        self._process: multiprocessing.process.BaseProcess | None = None
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
        ours, theirs = _CONTEXT.Pipe()
        process = _CONTEXT.Process(
            target=_serve, args=(theirs, self._path, self._pragmas), name=f"keyscope-{self._name}", daemon=True
        )
        process.start()
        theirs.close()
        self._process, self._conn = process, ours
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
        self._process.join(1.0)
        return self._process.exitcode

    def _forget_child(self) -> None:
        if self._conn is not None:
            self._conn.close()
        if self._process is not None and self._process.is_alive():
            self._process.kill()
        if self._process is not None:
            self._process.join(STOP_SECONDS)
        self._process, self._conn = None, None

    def _stop(self) -> None:
        if self._conn is not None:
            try:
                self._conn.send(None)
            except (BrokenPipeError, ConnectionResetError):
                pass
        if self._process is not None:
            self._process.join(STOP_SECONDS)
        self._forget_child()
