"""Freshness across servers: the database's revision now, read by one round trip that many callers share.

A VerifyKey that starts after a write was acknowledged, on any server, must see
it. So the cache's check must read the revision at a moment after the call
began: a call that arrives while a read is in flight (it may have been taken
before the write it must see) waits for the next one, which starts when that
read ends and serves everyone who arrived meanwhile. However many calls come
at once, at most one read is in flight and one is waiting, and each call waits
at most two round trips. When the read in flight fails (the database is down or
does not answer), the calls waiting for the next one fail with it rather than
wait as long again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

__all__ = ["SharedRead"]


class SharedRead:
    """`await shared()`: the result of `read()` begun no earlier than this call, shared with the calls around."""

    def __init__(self, read: Callable[[], Awaitable[int]]) -> None:
        self._read = read
        self._running: asyncio.Future[int] | None = None  # begun: too early for a caller that arrives now
        self._next: asyncio.Future[int] | None = None  # begins when the running one ends

    async def __call__(self) -> int:
        if self._running is None:
            self._running = _retrieved(asyncio.ensure_future(self._run()))
            return await asyncio.shield(self._running)
        if self._next is None:
            self._next = _retrieved(asyncio.ensure_future(self._after(self._running)))
        return await asyncio.shield(self._next)

    async def _run(self) -> int:
        try:
            return await self._read()
        finally:
            self._running = None

    async def _after(self, running: asyncio.Future[int]) -> int:
        await asyncio.wait([running])
        self._running, self._next = self._next, None
        try:
            failure = None if running.cancelled() else running.exception()
            if failure is not None:
                # The database just failed to answer: so do these calls, rather than wait as long again.
                raise failure
            return await self._read()
        finally:
            self._running = None


def _retrieved(future: asyncio.Future[int]) -> asyncio.Future[int]:
    """A shared read whose callers have all gone (their deadlines passed) still ends; its failure is theirs, not
    the event loop's to report as never retrieved."""
    future.add_done_callback(lambda done: done.cancelled() or done.exception())
    return future
