"""Budgets for failures that each cost a store lookup: root keys that the store does not know, per peer address, and
VerifyKey secrets that it does not know, per calling root key.

A caller past its budget is refused (keyscope_server.errors.Throttled: RESOURCE_EXHAUSTED with RetryInfo) only for
calls that would need another such lookup. What the store answers from its caches (a known root key, a secret it
has verified or found unknown before) is never refused, so a well-behaved caller behind the same address as a
flooder, or using the same root key, goes on being served. Calls refused here cost nothing and count nothing: a
flooder is taken again once its failures have aged out of the window, however hard it goes on knocking.

Each budget is a sliding window of failures, estimated from two fixed windows (the previous one weighted by the
share of it that the sliding window still covers), as Cloudflare's and the `limits` library's sliding windows
are: two counters a subject, whatever its budget. At most `tracked` subjects are kept; the least recently failed
go first, so memory stays bounded under a flood from any number of addresses.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import grpc

from keyscope_server.addresses import peer_address
from keyscope_server.errors import Throttled

__all__ = ["NO_THROTTLE", "FailureBudget", "Throttle", "ThrottleConfig"]


@dataclass(frozen=True)
class ThrottleConfig:
    """Failures allowed in any `window_seconds`; 0 turns that budget off."""

    auth_failures: int = 50  # unknown root keys, per peer address
    unknown_keys: int = 100  # VerifyKey secrets that no key has, per calling root key
    window_seconds: float = 1.0
    tracked: int = 10_000  # subjects (addresses, root keys) remembered at once, per budget
    clock: Callable[[], float] = field(default=time.monotonic, compare=False, repr=False)


class FailureBudget:
    """Failures per subject in a sliding window of `window` seconds; `check` refuses a subject at its budget."""

    def __init__(
        self,
        failures: int,
        window: float,
        *,
        reason: str,
        what: str,
        tracked: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if failures < 1 or not window > 0 or tracked < 1:
            raise ValueError("a budget needs failures >= 1, window > 0 and tracked >= 1")
        self._failures = failures
        self._window = window
        self._reason = reason
        self._what = what
        self._tracked = tracked
        self._clock = clock
        # subject -> [index of its current fixed window, failures in the previous one, failures in the current one]
        self._counts: OrderedDict[str, list[int]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._counts)

    def _rolled(self, subject: str, now: float) -> tuple[list[int], float] | None:
        """The subject's counts moved to the fixed window `now` is in, and how far into it `now` is (0 to 1)."""
        counts = self._counts.get(subject)
        if counts is None:
            return None
        position = now / self._window
        index = math.floor(position)
        if counts[0] != index:
            counts[1] = counts[2] if counts[0] == index - 1 else 0
            counts[2] = 0
            counts[0] = index
        return counts, position - index

    def check(self, subject: str) -> None:
        """Raise Throttled if one more failure would take `subject` past its budget."""
        now = self._clock()
        rolled = self._rolled(subject, now)
        if rolled is None:
            return
        (_, previous, current), into = rolled
        allowed = self._failures - 1  # the estimate at which one more failure is still within the budget
        if previous * (1 - into) + current <= allowed:
            if previous == current == 0:
                del self._counts[subject]
            return
        if current > allowed:
            # Only once the current window is the previous one, and enough of it has slid out.
            wait = (1 - into) + (1 - allowed / current)
        else:
            wait = (1 - (allowed - current) / previous) - into
        # Rounded up to the millisecond: a caller that waits exactly this long is taken.
        retry_after = math.ceil(wait * self._window * 1000 + 1e-6) / 1000
        raise Throttled(self._reason, self._what, retry_after)

    def spend(self, subject: str) -> None:
        """Count one failure of `subject`."""
        now = self._clock()
        rolled = self._rolled(subject, now)
        if rolled is None:
            self._counts[subject] = [math.floor(now / self._window), 0, 1]
            while len(self._counts) > self._tracked:
                self._counts.popitem(last=False)
            return
        rolled[0][2] += 1
        self._counts.move_to_end(subject)


class _Gate:
    """One call's gate to a store lookup (keyscope_server.store.interface.LookupGate), for a known subject."""

    __slots__ = ("_budget", "_subject")

    def __init__(self, budget: FailureBudget, subject: str) -> None:
        self._budget = budget
        self._subject = subject

    def admit(self) -> None:
        self._budget.check(self._subject)

    def missed(self) -> None:
        self._budget.spend(self._subject)


class _PeerGate:
    """A gate whose subject, the caller's address, is read from the call only if a lookup is asked for."""

    __slots__ = ("_budget", "_context", "_subject")

    def __init__(self, budget: FailureBudget, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        self._budget = budget
        self._context = context
        self._subject: str | None = None

    def _address(self) -> str:
        if self._subject is None:
            self._subject = peer_address(self._context.peer())
        return self._subject

    def admit(self) -> None:
        self._budget.check(self._address())

    def missed(self) -> None:
        self._budget.spend(self._address())


class Throttle:
    """The server's two budgets; each hands out the gate of one call, or None where that budget is off."""

    def __init__(self, config: ThrottleConfig) -> None:
        self.config = config
        self._peers = self._budget(
            config.auth_failures, "TOO_MANY_FAILED_AUTHENTICATIONS", "failed authentications from this address"
        )
        self._root_keys = self._budget(
            config.unknown_keys, "TOO_MANY_UNKNOWN_KEYS", "VerifyKey calls with unknown keys by this root key"
        )

    def _budget(self, failures: int, reason: str, what: str) -> FailureBudget | None:
        if failures <= 0:
            return None
        config = self.config
        return FailureBudget(
            failures, config.window_seconds, reason=reason, what=what, tracked=config.tracked, clock=config.clock
        )

    def for_peer(self, context: grpc.aio.ServicerContext[Any, Any]) -> _PeerGate | None:
        """The gate of a call's root-key lookup: failures count against the caller's address."""
        return None if self._peers is None else _PeerGate(self._peers, context)

    def for_root_key(self, root_key_id: str) -> _Gate | None:
        """The gate of a VerifyKey lookup by the root key `root_key_id`."""
        return None if self._root_keys is None else _Gate(self._root_keys, root_key_id)


NO_THROTTLE = Throttle(ThrottleConfig(auth_failures=0, unknown_keys=0))
