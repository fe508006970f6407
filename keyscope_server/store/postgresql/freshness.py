"""Freshness across servers: the database's revision now, read by one round trip that many callers share.

A VerifyKey that starts after a write was acknowledged, on any server, must see
it. So the cache's check must read the revision at a moment after the call
began: a call that arrives while a read is in flight (it may have been taken
before the write it must see) waits for the next one, which starts when that
read ends and serves everyone who arrived meanwhile. However many calls come
at once, one read is in flight at most. When the read in flight fails (the
database is down or does not answer), the calls waiting for the next one fail
with it rather than wait as long again.

A read costs the server more CPU than a VerifyKey answered from the cache, and
on a busy server calls do not come together by themselves: each runs its own
steps on the event loop, one after another, and a read begun with the first
call ended before the next one arrived (64 VerifyKeys in flight: 1.03 reads a
call). So a read first lets the calls on their way reach it: it begins once a
turn of the event loop ran nothing else (it took under QUIET_TURN_SECONDS), or
after MAX_TURNS turns. On an idle server that is one turn (a VerifyKey's p50
at one call in flight did not move); with 64 in flight, 0.36 to 0.39 reads a
call, and 1.7k VerifyKeys a second against 1.0 to 1.3k.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

__all__ = ["MAX_TURNS", "QUIET_TURN_SECONDS", "SharedRead"]

# A turn of the loop that ran nothing but this one takes a few microseconds. On uvloop a busy turn can take under 20
# µs too: at that bound, 64 VerifyKeys in flight read the revision for more calls (PostgreSQL's verify-warm at 0.78
# to 0.82 of SQLite's, the server's CPU 354 to 366 µs a call); at 8 µs, 0.93 (290 µs).
QUIET_TURN_SECONDS = 8e-6
MAX_TURNS = 12  # a read waits this many busy turns at most for the calls on their way


class SharedRead:
    """`await shared()`: the result of `read()` begun no earlier than this call, shared with the calls around.

    One task runs the reads, one after another, while calls wait for one: never two reads at once (the engine
    gives them a connection of their own)."""

    def __init__(self, read: Callable[[], Awaitable[int]]) -> None:
        self._read = read
        self._next: asyncio.Future[int] | None = None  # the read not begun yet, which a call arriving now joins
        self._reader: asyncio.Task[None] | None = None

    async def __call__(self) -> int:
        if self._next is None:
            self._next = _retrieved(asyncio.get_running_loop().create_future())
        waiting = self._next
        if self._reader is None:
            self._reader = asyncio.ensure_future(self._run())
        return await asyncio.shield(waiting)

    async def _run(self) -> None:
        try:
            while (begun := self._next) is not None:
                try:
                    await _calls_on_their_way()  # an arriving call joins this read, not begun yet
                    self._next = None  # from now on, an arriving call waits for the next read
                    begun.set_result(await self._read())
                except BaseException as failure:
                    # The database just failed to answer (or the loop is closing): so do the calls waiting for
                    # the next read, rather than wait as long again. A call after them starts a new read.
                    failed = [future for future in dict.fromkeys((begun, self._next)) if future is not None]
                    self._next = None
                    for future in failed:
                        if isinstance(failure, asyncio.CancelledError):
                            future.cancel()
                        else:
                            future.set_exception(failure)
                    if not isinstance(failure, Exception):
                        raise
                    return
        finally:
            self._reader = None


async def _calls_on_their_way() -> None:
    """Let the event loop run the calls that are under way, until a turn runs nothing else (or MAX_TURNS)."""
    for _ in range(MAX_TURNS):
        started = time.perf_counter()
        await asyncio.sleep(0)
        if time.perf_counter() - started < QUIET_TURN_SECONDS:
            return


def _retrieved(future: asyncio.Future[int]) -> asyncio.Future[int]:
    """A shared read whose callers have all gone (their deadlines passed) still ends; its failure is theirs, not
    the event loop's to report as never retrieved."""
    future.add_done_callback(lambda done: done.cancelled() or done.exception())
    return future
