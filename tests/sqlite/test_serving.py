"""Serving on SQLite: a write held by another connection's lock while the server stops, and a database damaged
under the running server."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from keyscope.v1 import apis_pb2, keys_pb2
from keyscope_server.factory import RunningServer
from keyscope_server.store import Store
from tests.client import Caller
from tests.polling import until

pytestmark = pytest.mark.asyncio

Serving = health_pb2.HealthCheckResponse


async def test_ok_graceful_stop(
    server: RunningServer, store: Store, channel: grpc.aio.Channel, admin: Caller, db_path: Path
) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    watch = health.Watch(health_pb2.HealthCheckRequest(service="keyscope.v1.KeyService"))
    assert (await watch.read()).status == Serving.SERVING

    # Another writer holds SQLite's write lock, so the call below stays in flight (on the busy
    # timeout) until we let it go: the stop begins while it is running.
    other = sqlite3.connect(db_path, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        in_flight = admin.apis.CreateApi(apis_pb2.CreateApiRequest(name="in flight"), metadata=admin.md)
        # A round trip sent after it on the same connection: once answered, the call has reached the server.
        # Not that a handler has it (each method has a queue of its own): the lame duck lets one take it
        # before new calls are refused, which would cancel it unrun.
        assert (await health.Check(health_pb2.HealthCheckRequest())).status == Serving.SERVING
        stopping = asyncio.create_task(server.stop(30, lame_duck=0.5))

        assert (await watch.read()).status == Serving.NOT_SERVING
        watch.cancel()  # a watch is a call in flight too; let it end so the stop does not wait on it
        # The lame duck: new calls are still served, and health says NOT_SERVING.
        assert (await health.Check(health_pb2.HealthCheckRequest())).status == Serving.NOT_SERVING

        # Then they are refused. (A check on its way as the lame duck ends may be CANCELLED instead: see
        # tests/sqlite/test_graceful_stop.py.)
        async def refused() -> bool:
            try:
                answer = await health.Check(health_pb2.HealthCheckRequest())
            except grpc.aio.AioRpcError as e:
                if e.code() == grpc.StatusCode.UNAVAILABLE:
                    return True
                assert e.code() == grpc.StatusCode.CANCELLED
            else:
                assert answer.status == Serving.NOT_SERVING
            return False

        await until(refused, "health checks refused once the lame duck is over", seconds=10)

        with pytest.raises(grpc.aio.AioRpcError) as e:
            await admin.apis.CreateApi(apis_pb2.CreateApiRequest(name="too late"), metadata=admin.md)
        assert e.value.code() == grpc.StatusCode.UNAVAILABLE
        assert not in_flight.done()
    finally:
        other.execute("ROLLBACK")
        other.close()

    response = await in_flight
    assert response.api.name == "in flight"
    await stopping
    await store.close()
    # The call that finished during the stop was committed: it is in the file.
    check = sqlite3.connect(db_path)
    try:
        assert check.execute("SELECT name FROM apis").fetchall() == [("in flight",)]
    finally:
        check.close()


async def test_unavailable_when_table_is_gone(admin: Caller, db_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    api = await admin.make_api()
    key, _ = await admin.make_key(api.id)
    # Someone else damages the database under the running server.
    other = sqlite3.connect(db_path, isolation_level=None)
    try:
        other.execute("DROP TABLE keys")
    finally:
        other.close()
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await admin.keys.GetKey(keys_pb2.GetKeyRequest(key_id=key.id), metadata=admin.md)
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "no such table" not in (e.value.details() or "")
    assert "no such table: keys" in caplog.text  # operators see what happened
