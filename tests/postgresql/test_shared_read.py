"""The freshness read that concurrent VerifyKeys share (keyscope_server.store.postgresql.freshness.SharedRead): each
call gets a read begun after it arrived, never two reads run at once, a busy server's calls share a read, and a failed
read fails the calls waiting on it.

The read here is a function of the test's, which each test lets end when it chooses: SharedRead only orders
calls around it, whatever it reads."""

from __future__ import annotations

import asyncio
import time

import pytest

from keyscope_server.store.postgresql.freshness import MAX_TURNS, QUIET_TURN_SECONDS, SharedRead

pytestmark = pytest.mark.asyncio

WAIT_SECONDS = 5  # for a read to begin: it begins within a few turns of the event loop, or never


class GatedReads:
    """Reads that each return their own number (1, 2, ...) once the test opens their gate."""

    def __init__(self) -> None:
        self.begun = 0
        self.in_flight = 0
        self.most_in_flight = 0
        self.gates: list[asyncio.Future[None]] = []
        self.failure: Exception | None = None

    async def read(self) -> int:
        self.begun += 1
        number = self.begun
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        gate = asyncio.get_running_loop().create_future()
        self.gates.append(gate)
        try:
            await gate
            if self.failure is not None:
                raise self.failure
            return number
        finally:
            self.in_flight -= 1

    async def begin(self, number: int) -> None:
        """Wait until read `number` has begun (a test fails, rather than hangs, if it never does)."""
        async with asyncio.timeout(WAIT_SECONDS):
            while self.begun < number:
                await asyncio.sleep(0)

    async def open(self, number: int) -> None:
        """Let read `number` end, once it has begun (a test fails, rather than hangs, if it never does)."""
        async with asyncio.timeout(WAIT_SECONDS):
            while len(self.gates) < number:
                await asyncio.sleep(0)
        self.gates[number - 1].set_result(None)

    async def open_next(self) -> None:
        """Let the first read not yet let go end, once it has begun."""
        await self.open(sum(gate.done() for gate in self.gates) + 1)


async def _turns(count: int = 5) -> None:
    for _ in range(count):
        await asyncio.sleep(0)


async def test_ok_calls_arriving_together_share_one_read() -> None:
    reads = GatedReads()
    shared = SharedRead(reads.read)
    calls = [asyncio.ensure_future(shared()) for _ in range(50)]
    await reads.open(1)
    assert await asyncio.gather(*calls) == [1] * 50
    assert reads.begun == 1


async def test_ok_a_call_arriving_during_a_read_gets_the_next_one() -> None:
    reads = GatedReads()
    shared = SharedRead(reads.read)
    early = asyncio.ensure_future(shared())
    await reads.begin(1)
    assert reads.begun == 1
    late = [asyncio.ensure_future(shared()) for _ in range(10)]  # read 1 may predate what they must see
    await reads.open(1)
    assert await early == 1
    await reads.open(2)
    assert await asyncio.gather(*late) == [2] * 10
    assert reads.begun == 2


async def test_ok_on_a_busy_loop_calls_arriving_turn_after_turn_share_one_read() -> None:
    reads = GatedReads()
    shared = SharedRead(reads.read)
    busy = True

    async def other_work() -> None:  # the rest of a busy server: every turn of the loop runs some of it
        while busy:
            time.sleep(2 * QUIET_TURN_SECONDS)
            await asyncio.sleep(0)

    worker = asyncio.ensure_future(other_work())
    try:
        calls = []
        for _ in range(MAX_TURNS // 2):  # a call a turn, as they come on a busy server
            calls.append(asyncio.ensure_future(shared()))
            await asyncio.sleep(0)
        await reads.open(1)
        async with asyncio.timeout(WAIT_SECONDS):  # a call left for a second read would wait for ever
            assert await asyncio.gather(*calls) == [1] * len(calls)
        assert reads.begun == 1
    finally:
        busy = False
        await worker


async def test_ok_never_two_reads_at_once_under_a_stream_of_calls() -> None:
    reads = GatedReads()
    shared = SharedRead(reads.read)
    calls: list[tuple[int, asyncio.Future[int]]] = []
    for number in range(1, 21):
        # Calls arrive in every phase: as a read begins, while it runs, and the moment it ends.
        calls += [(reads.begun, asyncio.ensure_future(shared())) for _ in range(3)]
        await _turns(2)
        calls += [(reads.begun, asyncio.ensure_future(shared())) for _ in range(3)]
        await reads.open(number)
        calls += [(reads.begun, asyncio.ensure_future(shared())) for _ in range(3)]
    while not all(call.done() for _, call in calls):  # the reads of the calls that arrived as read 20 ended
        await reads.open_next()
        await _turns()
    for begun_before, call in calls:
        # A call's answer is of a read begun after it arrived.
        assert await call > begun_before
    assert reads.most_in_flight == 1


async def test_unavailable_a_failed_read_fails_the_calls_waiting_for_the_next_and_then_recovers() -> None:
    reads = GatedReads()
    shared = SharedRead(reads.read)
    first = asyncio.ensure_future(shared())
    await reads.begin(1)
    waiting = asyncio.ensure_future(shared())
    reads.failure = ConnectionError("the database is gone")
    await reads.open(1)
    for call in (first, waiting):
        with pytest.raises(ConnectionError):
            await call
    assert reads.begun == 1  # the waiting call did not start a second read to fail the same way
    reads.failure = None
    later = asyncio.ensure_future(shared())
    await reads.open(2)
    assert await later == 2


async def test_ok_a_caller_that_gives_up_leaves_the_read_to_the_others() -> None:
    reads = GatedReads()
    shared = SharedRead(reads.read)
    impatient, patient = asyncio.ensure_future(shared()), asyncio.ensure_future(shared())
    await reads.begin(1)
    impatient.cancel()
    await reads.open(1)
    assert await patient == 1
    assert impatient.cancelled()
