"""`serve --workers N`: several processes on one port over one database, and changes seen across them."""

from __future__ import annotations

import os
import re
import signal
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from keyscope.v1 import apis_pb2, apis_pb2_grpc, keys_pb2, keys_pb2_grpc
from keyscope_server.cli import EXAMPLE_ROOT_KEY
from tests.conftest import NewDatabase
from tests.processes import children_of, create_root_key, free_port, run, start_serve, stop

Code = keys_pb2.VerifyKeyResponse.Code


def test_ok_two_workers_share_the_port_and_stop_together(tmp_path: Path, new_database: NewDatabase) -> None:
    db, port = new_database("keyscope"), free_port()
    supervisor = start_serve(tmp_path, db, port, "--workers", "2")
    try:
        workers = children_of(supervisor.pid)
        assert len(workers) == 2
        # Each new channel is a new connection, which the kernel gives to one worker or the other.
        for _ in range(40):
            with grpc.insecure_channel(f"127.0.0.1:{port}", options=[("grpc.use_local_subchannel_pool", 1)]) as ch:
                answer = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=10)
                assert answer.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        code, log = stop(supervisor, signal.SIGTERM)
    assert code == 0, log
    served_by = {int(pid) for pid in re.findall(r" INFO (\d+) keyscope.rpc .*Health/Check OK", log)}
    assert served_by == set(workers)
    assert log.count("keyscope serving on") == 2 and log.count(" stopped\n") == 2
    assert "workers stopped with codes [0, 0]" in log
    assert children_of(supervisor.pid) == []


def test_ok_a_worker_that_dies_stops_the_others(tmp_path: Path, new_database: NewDatabase) -> None:
    db, port = new_database("keyscope"), free_port()
    supervisor = start_serve(tmp_path, db, port, "--workers", "2")
    try:
        victim, survivor = children_of(supervisor.pid)
        os.kill(victim, signal.SIGKILL)
        _, log = supervisor.communicate(timeout=60)
    finally:
        if supervisor.poll() is None:
            stop(supervisor, signal.SIGKILL)
    # Serving on with one worker fewer would hide the failure; the supervisor ends, and says why.
    assert supervisor.returncode == 1
    assert f"worker {victim} exited with code -9; stopping the others" in log
    assert not Path(f"/proc/{survivor}").exists()


def test_invalid_argument_workers_with_port_zero(tmp_path: Path) -> None:
    result = run(tmp_path, "serve", "--db", str(tmp_path / "keyscope.db"), "--port", "0", "--workers", "2")
    assert result.returncode == 2
    assert "--workers needs a fixed --port" in result.stderr


def test_ok_a_change_through_one_process_is_seen_by_the_next_call_to_another(
    tmp_path: Path, new_database: NewDatabase
) -> None:
    # Workers are processes over one database; two servers on two ports make the target of each call certain. On
    # PostgreSQL they share nothing else: no file, no memory.
    db = new_database("keyscope")
    secret = create_root_key(tmp_path, db, *EXAMPLE_ROOT_KEY)
    md = (("authorization", f"Bearer {secret}"),)
    port_a, port_b = free_port(), free_port()
    a = start_serve(tmp_path, db, port_a)
    b = start_serve(tmp_path, db, port_b)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port_a}") as ch_a, grpc.insecure_channel(f"127.0.0.1:{port_b}") as ch_b:
            keys = {"a": keys_pb2_grpc.KeyServiceStub(ch_a), "b": keys_pb2_grpc.KeyServiceStub(ch_b)}
            api = apis_pb2_grpc.ApiServiceStub(ch_a).CreateApi(apis_pb2.CreateApiRequest(name="shared"), metadata=md)
            created = keys["a"].CreateKey(keys_pb2.CreateKeyRequest(api_id=api.api.id), metadata=md)
            for round_ in range(10):
                writer, reader = ("a", "b") if round_ % 2 == 0 else ("b", "a")
                names = [f"documents.r{round_}", "documents.read"]
                keys[writer].SetPermissions(
                    keys_pb2.SetPermissionsRequest(key_id=created.key.id, permissions=names), metadata=md
                )
                answer = keys[reader].VerifyKey(
                    keys_pb2.VerifyKeyRequest(key=created.secret, permissions=f"documents.r{round_}"), metadata=md
                )
                assert (answer.code, sorted(answer.permissions)) == (Code.CODE_VALID, sorted(names))
            keys["b"].UpdateKey(keys_pb2.UpdateKeyRequest(key_id=created.key.id, enabled=False), metadata=md)
            assert (
                keys["a"].VerifyKey(keys_pb2.VerifyKeyRequest(key=created.secret), metadata=md).code
                == Code.CODE_DISABLED
            )
            keys["a"].DeleteKey(keys_pb2.DeleteKeyRequest(key_id=created.key.id), metadata=md)
            assert (
                keys["b"].VerifyKey(keys_pb2.VerifyKeyRequest(key=created.secret), metadata=md).code
                == Code.CODE_NOT_FOUND
            )
    finally:
        stopped = [stop(p, signal.SIGTERM) for p in (a, b)]
    assert [code for code, _ in stopped] == [0, 0], [log for code, log in stopped if code]
