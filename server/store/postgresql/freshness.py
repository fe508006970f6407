"""Freshness across servers: the database's revision now, read by one round trip that many callers share.

A VerifyKey that starts after a write was acknowledged, on any server, must see
it. So the cache's check must read the revision at a moment after the call
began: a call that arrives while a read is in flight (it may have been taken
before the write it must see) waits for the next one, which starts when that
read ends and serves everyone who arrived meanwhile. However many calls come
at once, one read is in flight at most, and each call waits at most two round
trips. When the read in flight fails (the database is down or
does not answer), the calls waiting for the next one fail with it rather than
wait as long again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

__all__ = ["SharedRead"]


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
                self._next = None  # from now on, an arriving call waits for the next read
                try:
                    begun.set_result(await self._read())
                except BaseException as failure:
                    # The database just failed to answer (or the loop is closing): so do the calls waiting for
                    # the next read, rather than wait as long again. A call after them starts a new read.
                    failed, self._next = [begun, self._next], None
                    for future in failed:
                        if future is None:
                            continue
                        if isinstance(failure, asyncio.CancelledError):
                            future.cancel()
                        else:
                            future.set_exception(failure)
                    if not isinstance(failure, Exception):
                        raise
                    return
        finally:
            self._reader = None


def _retrieved(future: asyncio.Future[int]) -> asyncio.Future[int]:
    """A shared read whose callers have all gone (their deadlines passed) still ends; its failure is theirs, not
    the event loop's to report as never retrieved."""
    future.add_done_callback(lambda done: done.cancelled() or done.exception())
    return future
