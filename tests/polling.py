"""Waiting for something that happens on its own time (a process, a probe, a lame duck), by asking again."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

__all__ = ["until"]

T = TypeVar("T")


async def until(
    condition: Callable[[], T | Awaitable[T]],
    what: str | Callable[[], str] = "condition",
    seconds: float = 30.0,
    every: float = 0.01,
) -> T:
    """Call `condition` (a function or a coroutine function) every `every` seconds until it returns something
    true, and return that; fail after `seconds`, naming `what` (or what `what()` says then, to show the state
    last seen)."""
    deadline = time.monotonic() + seconds
    while True:
        answer = condition()
        if inspect.isawaitable(answer):
            answer = await answer
        if answer:
            return answer  # type: ignore[return-value]
        if time.monotonic() >= deadline:
            raise AssertionError(f"not reached in {seconds}s: {what() if callable(what) else what}")
        await asyncio.sleep(every)
