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
the process opens. If the child dies, the calls sent to it fail with
StoreUnavailable and the next call starts a new one.

Calls are pipelined: the next is sent while the last one's answer is on its way
back, so the child does not sit idle between them (under 64 concurrent
SetPermissions it was idle 32% of the time, waiting for the next batch of writes
to be formed on the busy event loop and sent; with the next batch already in its
pipe, 17%). A thread sends and another receives; answers come back in the order
the calls were sent.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import subprocess
import sys
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
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
        # Two threads do the blocking pipe traffic: one sends, one receives. Each takes its jobs in the order they
        # were given, and `run` gives both of a call's jobs at once, so answers are matched to calls in order, as on
        # SqliteThread; and the next call reaches the child while the last one's answer is still on its way back.
        self._sender = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"keyscope-sqlite-{name}-send")
        self._receiver = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"keyscope-sqlite-{name}-receive")
        self._lock = threading.Lock()  # over `_child`, which both threads may forget
        self._child: Child | None = None

    @classmethod
    async def open(cls, path: Path, pragmas: tuple[str, ...], name: str) -> SqliteProcess:
        opened = cls(path, pragmas, name)
        try:
            await asyncio.get_running_loop().run_in_executor(opened._sender, opened._start)
        except BaseException:
            opened._shutdown()
            raise
        return opened

    @property
    def pid(self) -> int | None:
        """The child's process id; None between a child's death and the next call."""
        child = self._child
        return None if child is None else child[0].pid

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """`fn(connection, *args)` in the child. Once started it runs to its end, even if the caller is
        cancelled."""
        ok, value = await self._exchange((fn, args))
        if not ok:
            raise value
        result: T = value
        return result

    async def close(self) -> None:
        """Close the connection after the work already sent; then keep the child for the next store this process
        opens, or end it; and let the threads end."""
        try:
            await self._exchange(None, stop=True)
        finally:
            self._shutdown()

    def _exchange(self, message: Any, *, stop: bool = False) -> asyncio.Future[tuple[bool, Any]]:
        """Send `message` and receive its answer. Both jobs are given here, in one step, so that no other call's
        can come between them: the n-th answer received is the n-th call's."""
        sent = self._sender.submit(self._send, message, stop)
        return asyncio.wrap_future(self._receiver.submit(self._receive, sent, stop))

    def _shutdown(self) -> None:
        self._sender.shutdown(wait=False)
        self._receiver.shutdown(wait=False)

    # -- on the sending thread ------------------------------------------------------------------------------

    def _start(self) -> None:
        kept = _KEPT.take()
        if kept is not None and self._open(kept):
            return
        if not self._open(_spawn()):
            log.error("the store's writer process ended as it started")
            raise StoreUnavailable()

    def _open(self, child: Child) -> bool:
        """`child` serving this store's database; False if it has ended (it is forgotten)."""
        conn = child[1]
        try:
            conn.send((self._path, self._pragmas))
            ok, value = conn.recv()
        except (BrokenPipeError, ConnectionResetError, EOFError):
            _end(child, kill=True)
            return False
        if not ok:
            _KEPT.keep(child)  # it opened nothing: another store may use it
            raise value
        with self._lock:
            self._child = child
        return True

    def _send(self, message: Any, stop: bool) -> Child | None:
        """Send `message` to the child, and return that child for `_receive`; None if there is none to stop."""
        child = self._child
        if child is not None and child[0].poll() is not None:
            log.error("the store's writer process ended unexpectedly (exit code %s)", child[0].returncode)
            self._retire(child)
            child = None
        if child is None:
            if stop:
                return None
            self._start()  # the last child died: a new one, on the same file
            child = self._child
            assert child is not None
        try:
            child[1].send(message)
        except (BrokenPipeError, ConnectionResetError, OSError):
            self._retire(child)
            if stop:
                return None
            raise StoreUnavailable() from None
        return child

    def _retire(self, child: Child) -> None:
        """Forget `child`, and end it once the answers already awaited from it have been received (or have failed):
        only the receiving thread closes a pipe that it may be reading."""
        self._forget(child)
        self._receiver.submit(_end, child, kill=True)

    # -- on the receiving thread ----------------------------------------------------------------------------

    def _receive(self, sent: Future[Child | None], stop: bool) -> tuple[bool, Any]:
        """The answer to what `sent` sent (its exception, if sending failed). For a stop, the child is then kept
        for the next store, or ended."""
        child = sent.result()
        if child is None:  # a stop with no child left: nothing to close
            return True, None
        if stop:
            self._stop(child)
            return True, None
        try:
            outcome: tuple[bool, Any] = child[1].recv()
        except (EOFError, ConnectionResetError, OSError):
            log.error("the store's writer process ended unexpectedly (exit code %s)", _exit_code(child))
            self._forget(child)
            _end(child, kill=True)
            raise StoreUnavailable() from None
        return outcome

    def _stop(self, child: Child) -> None:
        """Once `child` has closed the store's database, keep it for the next store this process opens, or end
        it."""
        self._forget(child)
        try:
            if not child[1].poll(STOP_SECONDS):
                log.error("the store's writer process did not close its database within %.0f s; killed", STOP_SECONDS)
                closed = False
            else:
                closed = child[1].recv() == (True, None)
        except (EOFError, ConnectionResetError, OSError):
            closed = False  # it had ended: nothing to close
        if closed:
            _KEPT.keep(child)
        else:
            _end(child, kill=True)

    def _forget(self, child: Child) -> None:
        """Start a new child at the next call, if `child` was this store's."""
        with self._lock:
            if self._child is child:
                self._child = None


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


def _exit_code(child: Child) -> int | None:
    try:
        return child[0].wait(1.0)
    except subprocess.TimeoutExpired:
        return None


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
