"""The store's writer in a process of its own (keyscope_server.store.sqlite.process): what crosses the pipe arrives
intact, the child outlives the signals a terminal or a service manager sends its process group, a child that dies is
replaced, a store's close leaves its child holding nothing of it, for the next store to use, and the child ends with the
server, or when the server is killed."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from keyscope.v1 import keys_pb2
from keyscope_server.access import CLI
from keyscope_server.errors import NotFound, StoreUnavailable
from keyscope_server.store import keys, open_store
from keyscope_server.store.engine_store import EngineStore
from keyscope_server.store.sqlite import SqliteEngine
from keyscope_server.store.sqlite.connection import fetch_all
from keyscope_server.store.sqlite.engine import read_transaction
from keyscope_server.store.sqlite.process import SqliteProcess
from tests.client import Caller
from tests.polling import until
from tests.processes import alive, descendants_of, free_port, start_serve, stop
from tests.sqlite.writer import tagged, wait_for, writer_of

PRAGMAS = ("busy_timeout = 5000", "foreign_keys = ON", "synchronous = FULL")
# A statement that runs until it is stopped: a recursive count without end.
ENDLESS = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c"

pytestmark = pytest.mark.asyncio


@pytest_asyncio.fixture
async def writer(db_path: Path) -> AsyncIterator[SqliteProcess]:
    await SqliteEngine.prepare(db_path)
    process = await SqliteProcess.open(db_path, PRAGMAS, "writer")
    yield process
    await process.close()


def child_of(writer: SqliteProcess) -> int:
    assert writer.pid is not None
    return writer.pid


def cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


# -- what crosses the pipe -------------------------------------------------------------------------------------


async def test_ok_results_cross_intact(writer: SqliteProcess) -> None:
    assert await writer.run(fetch_all, "SELECT ?, ?, ?", (1, "two", b"\x03")) == [(1, "two", b"\x03")]


async def test_not_found_domain_errors_cross_with_every_field(writer: SqliteProcess) -> None:
    with pytest.raises(NotFound) as caught:
        await writer.run(read_transaction, keys.get_key, (CLI, "key_missing", 0))
    expected = NotFound("key", ["key_missing"])
    assert (caught.value.resource_type, caught.value.names) == ("key", ("key_missing",))
    assert (caught.value.message, caught.value.args) == (expected.message, expected.args)


async def test_internal_errors_keep_their_fields_and_carry_the_child_traceback(writer: SqliteProcess) -> None:
    with pytest.raises(sqlite3.OperationalError) as caught:
        await writer.run(fetch_all, "SELECT * FROM no_such_table")
    assert caught.value.sqlite_errorcode == sqlite3.SQLITE_ERROR  # what store_faults decides on
    notes = "".join(caught.value.__notes__)
    assert "in the store's writer process" in notes and "fetch_all" in notes


async def test_internal_a_result_that_cannot_cross_is_an_error_that_says_so(writer: SqliteProcess) -> None:
    pid = child_of(writer)
    with pytest.raises(RuntimeError, match="could not send its result"):
        await writer.run(sqlite3.Connection.cursor)  # a cursor does not pickle
    assert await writer.run(fetch_all, "SELECT 1") == [(1,)]
    assert child_of(writer) == pid


async def test_ok_calls_in_flight_together_each_get_their_own_answer(writer: SqliteProcess) -> None:
    # The next call is sent before the last one's answer has come back: answers are matched to calls in order.
    answers = await asyncio.gather(*(writer.run(fetch_all, "SELECT ?", (n,)) for n in range(200)))
    assert answers == [[(n,)] for n in range(200)]


async def calls_waiting_in_the_pipe(writer: SqliteProcess, tmp_path: Path, calls: list[tuple[Any, ...]]) -> list[Any]:
    """The answers (or exceptions) of `calls`, all sent while the child is busy, so that they wait in its pipe."""
    go = tmp_path / "go"
    busy = asyncio.create_task(writer.run(wait_for, go))
    sent = [asyncio.create_task(writer.run(*call)) for call in calls]
    await asyncio.wrap_future(writer._sender.submit(lambda: None))  # every call has been sent
    go.touch()
    await busy
    return await asyncio.gather(*sent, return_exceptions=True)


async def test_ok_calls_waiting_together_run_in_one_call_of_together_and_each_gets_its_answer(
    writer: SqliteProcess, tmp_path: Path
) -> None:
    answers = await calls_waiting_in_the_pipe(writer, tmp_path, [(tagged, tag) for tag in "abc"])
    assert answers == [("a", 3), ("b", 3), ("c", 3)]


async def test_ok_another_call_between_them_keeps_its_place_in_order(writer: SqliteProcess, tmp_path: Path) -> None:
    calls = [(tagged, "a"), (tagged, "b"), (fetch_all, "SELECT 1"), (tagged, "c"), (tagged, "d")]
    answers = await calls_waiting_in_the_pipe(writer, tmp_path, calls)
    assert answers == [("a", 2), ("b", 2), [(1,)], ("c", 2), ("d", 2)]


async def test_internal_every_call_of_a_failed_together_hears_its_error(writer: SqliteProcess, tmp_path: Path) -> None:
    answers = await calls_waiting_in_the_pipe(writer, tmp_path, [(tagged, "a"), (tagged, "fail")])
    assert [type(answer) for answer in answers] == [ValueError, ValueError]
    assert all("one of these calls fails" in str(answer) for answer in answers)
    assert await writer.run(tagged, "after") == ("after", 1)


# -- signals, deaths, and the end ------------------------------------------------------------------------------


async def test_ok_the_child_ignores_sigint_and_sigterm(writer: SqliteProcess) -> None:
    # Ctrl-C reaches the whole foreground process group, and a service manager may SIGTERM the whole group: the
    # server stops the writer itself once the writes in flight are done.
    pid = child_of(writer)
    os.kill(pid, signal.SIGINT)
    os.kill(pid, signal.SIGTERM)
    assert await writer.run(fetch_all, "SELECT 1") == [(1,)]
    assert child_of(writer) == pid and alive(pid)


async def test_unavailable_when_the_child_dies_during_a_call_then_a_new_child_serves(
    writer: SqliteProcess, caplog: pytest.LogCaptureFixture
) -> None:
    pid = child_of(writer)
    busy_from = cpu_ticks(pid)
    endless = asyncio.create_task(writer.run(fetch_all, ENDLESS))
    await until(lambda: cpu_ticks(pid) > busy_from + 5, "the child runs the endless statement")
    os.kill(pid, signal.SIGKILL)
    with pytest.raises(StoreUnavailable):
        await endless
    assert "the store's writer process ended unexpectedly (exit code -9)" in caplog.text
    assert await writer.run(fetch_all, "SELECT 1") == [(1,)]
    assert child_of(writer) != pid and not alive(pid)


async def test_unavailable_for_every_call_sent_to_a_child_that_dies_then_a_new_child_serves(
    writer: SqliteProcess,
) -> None:
    pid = child_of(writer)
    busy_from = cpu_ticks(pid)
    endless = asyncio.create_task(writer.run(fetch_all, ENDLESS))
    waiting = asyncio.create_task(writer.run(fetch_all, "SELECT 2"))  # sent behind the endless one
    await until(lambda: cpu_ticks(pid) > busy_from + 5, "the child runs the endless statement")
    await asyncio.wrap_future(writer._sender.submit(lambda: None))  # both calls have been sent
    os.kill(pid, signal.SIGKILL)
    for call in (endless, waiting):
        with pytest.raises(StoreUnavailable):
            await call
    assert await writer.run(fetch_all, "SELECT 3") == [(3,)]
    assert child_of(writer) != pid and not alive(pid)


async def test_ok_a_child_that_died_idle_is_replaced_before_the_next_write(
    store: EngineStore, admin: Caller, caplog: pytest.LogCaptureFixture
) -> None:
    api = await admin.make_api(["documents.read", "documents.write"])
    key, _ = await admin.make_key(api.id, permissions=["documents.read"])
    pid = child_of(writer_of(store))
    os.kill(pid, signal.SIGKILL)
    await until(lambda: not alive(pid), "the killed child has ended")
    # The first write after the death is not the one to fail: the death is noticed before it is sent.
    answer = await admin.keys.SetPermissions(
        keys_pb2.SetPermissionsRequest(key_id=key.id, permissions=["documents.write"]), metadata=admin.md
    )
    assert [p.name for p in answer.permissions] == ["documents.write"]
    assert [p.name for p in (await admin.get_key(key.id)).permissions] == ["documents.write"]
    assert "the store's writer process ended unexpectedly (exit code -9)" in caplog.text


def open_files(pid: int) -> set[str]:
    return {os.readlink(fd) for fd in Path(f"/proc/{pid}/fd").iterdir()}


async def test_ok_a_closed_store_leaves_its_child_holding_nothing_and_the_next_store_reuses_it(tmp_path: Path) -> None:
    first = await open_store(str(tmp_path / "first.db"))
    pid = child_of(writer_of(first))
    assert str(tmp_path / "first.db") in open_files(pid)
    await first.close()
    assert alive(pid) and not any(name.startswith(str(tmp_path)) for name in open_files(pid))
    second = await open_store(str(tmp_path / "second.db"))
    try:
        assert child_of(writer_of(second)) == pid
        [(_, _, path)] = await writer_of(second).run(fetch_all, "PRAGMA database_list")
        assert path == str(tmp_path / "second.db")
    finally:
        await second.close()


async def test_ok_the_child_ends_when_the_server_exits(tmp_path: Path) -> None:
    server = start_serve(tmp_path, tmp_path / "keyscope.db", free_port())
    helpers = descendants_of(server.pid)
    assert len(helpers) == 1 and all(alive(pid) for pid in helpers)  # the writer, and nothing else
    code, _ = stop(server, signal.SIGTERM)
    assert code == 0
    assert not any(alive(pid) for pid in helpers)  # ended and reaped before the server exited


async def test_ok_the_child_ends_when_the_server_is_killed(tmp_path: Path) -> None:
    server = start_serve(tmp_path, tmp_path / "keyscope.db", free_port())
    helpers = descendants_of(server.pid)
    try:
        assert len(helpers) == 1 and all(alive(pid) for pid in helpers)  # the writer, and nothing else
    finally:
        stop(server, signal.SIGKILL)
    await until(lambda: not any(alive(pid) for pid in helpers), "every helper process has ended")
