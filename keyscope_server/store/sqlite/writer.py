"""The writer process's own side (keyscope_server.store.sqlite.process starts it and talks to it): one sqlite3
connection, and each `(fn, args)` that comes down the pipe run on it, its result or exception sent back.

The process is a new interpreter (`python -c "...; main(fd)"`), so it imports only this module and what the
functions it is sent need (the store's rules and the SQLite engine's tables: no gRPC, no event loop, no driver),
and holds nothing of the server (no sockets, no threads). It ignores SIGINT and SIGTERM, which a terminal or a
service manager sends to the whole process group: the server stops it, once the writes in flight are done, by
sending None or closing the pipe.
"""

from __future__ import annotations

import signal
import sqlite3
import traceback
from collections import deque
from multiprocessing.connection import Connection
from typing import Any

from keyscope_server.errors import DomainError
from keyscope_server.store.sqlite.connection import connect

__all__ = ["main", "with_child_traceback"]


def main(fd: int) -> None:
    """Serve on the pipe end `fd`: a database to open, `(path, pragmas)`, answered once its connection is open;
    then each `(fn, args)` on it until None comes, which closes it and is answered once it is closed; then the next
    database, until the pipe closes or None comes with no database open."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    conn = Connection(fd)
    while (opening := _receive(conn)) is not None:
        path, pragmas = opening
        try:
            db = connect(path, pragmas)
        except BaseException as exc:  # noqa: BLE001 - handed to the parent, which raises it
            if not _reply(conn, (False, exc)):
                return
            continue
        try:
            served = _reply(conn, (True, None)) and _serve(conn, db)
        finally:
            db.close()
        if not (served and _reply(conn, (True, None))):
            return  # the parent is gone


def _serve(conn: Connection, db: sqlite3.Connection) -> bool:
    """Run each `(fn, args)` received on `db` until None comes (True) or the parent is gone (False).

    The calls of a function that has a `together` (batches.run_batch: run_batches) that are waiting in the pipe one
    after another run in one call of it, and are answered one by one, in order: the parent sends the next batch of
    writes before the last one's answers are back, and two batches that meet here commit as one, with one fsync."""
    waiting: deque[Any] = deque()  # a message received after calls run together: the next to run
    while (request := waiting.popleft() if waiting else _receive(conn)) is not None:
        fn, args = request
        together = getattr(fn, "together", None)
        calls = [args]
        while together is not None and conn.poll():
            waiting.append(_receive(conn))
            if waiting[0] is None or waiting[0][0] is not fn:
                break
            calls.append(waiting.popleft()[1])
        if len(calls) == 1:
            outcomes = [_outcome(fn, db, args)]
        else:
            ok, value = _outcome(together, db, (calls,))
            outcomes = [(True, result) for result in value] if ok else [(False, value)] * len(calls)
        for outcome in outcomes:
            if not _reply(conn, outcome):
                return False
    return not conn.closed


def _outcome(fn: Any, db: sqlite3.Connection, args: tuple[Any, ...]) -> tuple[bool, Any]:
    try:
        return True, fn(db, *args)
    except BaseException as exc:  # noqa: BLE001 - handed to the parent, which raises it
        return False, with_child_traceback(exc)


def _receive(conn: Connection) -> Any:
    """The next message; None also when the parent is gone (the pipe is then closed here)."""
    try:
        return conn.recv()
    except (EOFError, OSError):
        conn.close()
        return None


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
