"""`python -m keyscope_server`: its commands, run as a person runs them, in a subprocess of the venv's interpreter."""

from __future__ import annotations

import asyncio
import hashlib
import re
import signal
from pathlib import Path

import grpc
import pytest

from keyscope.v1 import apis_pb2, apis_pb2_grpc, keys_pb2, keys_pb2_grpc
from keyscope_server.cli import EXAMPLE_ROOT_KEY
from keyscope_server.store import open_store
from keyscope_server.store.snapshot import StoreSnapshot
from tests.conftest import NewDatabase
from tests.processes import create_root_key, free_port, run, server_env, start_serve, stop
from tests.scrape import scrape

COMMANDS = ["serve", "create-root-key", "list-root-keys", "disable-root-key", "delete-root-key", "migrate"]


def root_key_ids(cwd: Path, db: Path | str) -> list[str]:
    result = run(cwd, "list-root-keys", "--db", str(db))
    assert result.returncode == 0, result.stderr
    return [line.split("\t")[0] for line in result.stdout.splitlines()]


async def _snapshot(db: Path) -> StoreSnapshot:
    store = await open_store(str(db))
    try:
        return await store.export_snapshot()
    finally:
        await store.close()


def test_ok_help_lists_commands(tmp_path: Path) -> None:
    result = run(tmp_path, "--help")
    assert result.returncode == 0
    listed = result.stdout.split("positional arguments:")[1].split("options:")[0].split()
    assert [word for word in listed if word in COMMANDS] == COMMANDS


@pytest.mark.parametrize("command", COMMANDS)
def test_ok_each_command_has_help(tmp_path: Path, command: str) -> None:
    result = run(tmp_path, command, "--help")
    assert result.returncode == 0
    assert "--db" in result.stdout


def test_ok_create_root_key_prints_only_the_secret(tmp_path: Path) -> None:
    db = tmp_path / "keyscope.db"
    result = run(tmp_path, "create-root-key", "--db", str(db), "-p", "api.*.verify_key")
    assert result.returncode == 0, result.stderr
    # stdout is for scripts (`SECRET=$(python -m keyscope_server create-root-key ...)`): exactly one line.
    lines = result.stdout.splitlines()
    assert len(lines) == 1
    secret = lines[0]
    assert secret.startswith("ksroot_")
    assert len(secret) > len("ksroot_") + 20
    assert "root key id: root_" in result.stderr
    assert secret not in result.stderr


def test_ok_database_holds_only_the_secret_hash(tmp_path: Path) -> None:
    db = tmp_path / "keyscope.db"
    secret = create_root_key(tmp_path, db, "api.*.verify_key")
    # The secret is in no file the store left behind (database, WAL, shared memory).
    files = [p for p in tmp_path.iterdir() if p.name.startswith("keyscope.db")]
    assert db in files
    for path in files:
        data = path.read_bytes()
        assert secret.encode() not in data
        assert secret.split("_", 1)[1].encode() not in data
    snapshot = asyncio.run(_snapshot(db))
    assert [r.secret_hash for r in snapshot.root_keys] == [hashlib.sha256(secret.encode()).digest()]
    assert secret not in repr(snapshot)


def test_ok_list_root_keys_shows_id_and_permissions_never_the_secret(tmp_path: Path, new_database: NewDatabase) -> None:
    db = new_database("keyscope")
    created = run(
        tmp_path, "create-root-key", "--db", str(db), "--name", "ci", "-p", "api.*.verify_key", "-p", "api.*.read_key"
    )
    secret = created.stdout.strip()
    root_key_id = created.stderr.split("root key id: ")[1].split()[0]
    result = run(tmp_path, "list-root-keys", "--db", str(db))
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [f"{root_key_id}\tci\tenabled\tapi.*.read_key api.*.verify_key"]
    assert secret not in result.stdout + result.stderr
    assert secret.split("_", 1)[1][:8] not in result.stdout


def test_ok_create_root_key_all_grants_every_permission(tmp_path: Path, new_database: NewDatabase) -> None:
    db = new_database("keyscope")
    result = run(tmp_path, "create-root-key", "--db", str(db), "--all")
    assert result.returncode == 0, result.stderr
    [line] = run(tmp_path, "list-root-keys", "--db", str(db)).stdout.splitlines()
    assert set(line.split("\t")[3].split()) == set(EXAMPLE_ROOT_KEY)


def test_invalid_argument_create_root_key_without_permission(tmp_path: Path) -> None:
    db = tmp_path / "keyscope.db"
    result = run(tmp_path, "create-root-key", "--db", str(db))
    assert result.returncode != 0
    assert result.stdout == ""
    assert "needs --permission" in result.stderr
    assert not db.exists()  # refused before touching the database


def test_ok_disable_and_delete_root_key(tmp_path: Path, new_database: NewDatabase) -> None:
    db = new_database("keyscope")
    create_root_key(tmp_path, db, "api.*.read_api")
    create_root_key(tmp_path, db, "api.*.read_key")
    first, second = root_key_ids(tmp_path, db)
    assert run(tmp_path, "disable-root-key", "--db", str(db), first).returncode == 0
    listing = run(tmp_path, "list-root-keys", "--db", str(db)).stdout.splitlines()
    assert [line.split("\t")[2] for line in listing] == ["disabled", "enabled"]
    assert run(tmp_path, "delete-root-key", "--db", str(db), first).returncode == 0
    assert root_key_ids(tmp_path, db) == [second]


@pytest.mark.parametrize("command", ["disable-root-key", "delete-root-key"])
def test_not_found_unknown_root_key(tmp_path: Path, new_database: NewDatabase, command: str) -> None:
    db = new_database("keyscope")
    create_root_key(tmp_path, db, "api.*.read_api")
    result = run(tmp_path, command, "--db", str(db), "root_doesnotexist")
    assert result.returncode == 1
    assert "error: root key not found: root_doesnotexist" in result.stderr
    assert len(root_key_ids(tmp_path, db)) == 1


def test_ok_serve_until_sigterm(tmp_path: Path, new_database: NewDatabase) -> None:
    db = new_database("keyscope")
    secret = create_root_key(tmp_path, db, "api.*.create_api")
    port = free_port()
    process = start_serve(tmp_path, db, port)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            # The key the CLI created works against the server it serves.
            created = apis_pb2_grpc.ApiServiceStub(channel).CreateApi(
                apis_pb2.CreateApiRequest(name="from the cli"),
                metadata=(("authorization", f"Bearer {secret}"),),
                timeout=10,
            )
            assert created.api.id.startswith("api_")
    finally:
        code, output = stop(process, signal.SIGTERM)
    assert code == 0, output
    assert f"keyscope serving on 127.0.0.1:{port}" in output
    assert "stopping: health NOT_SERVING" in output
    assert output.rstrip().endswith("stopped")
    assert secret not in output


@pytest.mark.parametrize(
    ("flags", "env", "loop"),
    [
        ([], {}, "uvloop"),
        (["--event-loop", "asyncio"], {}, "asyncio"),
        ([], {"KEYSCOPE_EVENT_LOOP": "asyncio"}, "asyncio"),
    ],
    ids=["default", "flag", "environment"],
)
def test_ok_serve_on_either_event_loop(
    tmp_path: Path, new_database: NewDatabase, flags: list[str], env: dict[str, str], loop: str
) -> None:
    db = new_database("keyscope")
    secret = create_root_key(tmp_path, db, "api.*.create_api", "api.*.verify_key", "api.*.create_key")
    port = free_port()
    process = start_serve(tmp_path, db, port, *flags, env=server_env(**env))
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            md = (("authorization", f"Bearer {secret}"),)
            api = apis_pb2_grpc.ApiServiceStub(channel).CreateApi(apis_pb2.CreateApiRequest(name="x"), metadata=md)
            keys = keys_pb2_grpc.KeyServiceStub(channel)
            key = keys.CreateKey(keys_pb2.CreateKeyRequest(api_id=api.api.id), metadata=md, timeout=10)
            answer = keys.VerifyKey(keys_pb2.VerifyKeyRequest(key=key.secret), metadata=md, timeout=10)
            assert answer.code == keys_pb2.VerifyKeyResponse.CODE_VALID
    finally:
        code, output = stop(process, signal.SIGTERM)
    assert code == 0, output
    assert f"keyscope serving on 127.0.0.1:{port} (plaintext), database {db}, event loop {loop}" in output


def test_invalid_argument_unknown_event_loop(tmp_path: Path) -> None:
    result = run(tmp_path, "serve", "--db", str(tmp_path / "k.db"), "--event-loop", "trio")
    assert result.returncode == 2
    assert "--event-loop: invalid choice: 'trio'" in result.stderr


def test_ok_max_message_bytes_from_the_environment(tmp_path: Path, new_database: NewDatabase) -> None:
    db = new_database("keyscope")
    secret = create_root_key(tmp_path, db, "api.*.create_api")
    port = free_port()
    process = start_serve(tmp_path, db, port, env=server_env(KEYSCOPE_MAX_MESSAGE_BYTES="2000"))
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = apis_pb2_grpc.ApiServiceStub(channel)
            md = (("authorization", f"Bearer {secret}"),)
            assert stub.CreateApi(apis_pb2.CreateApiRequest(name="x" * 100), metadata=md, timeout=10).api.id
            with pytest.raises(grpc.RpcError) as error:
                stub.CreateApi(apis_pb2.CreateApiRequest(name="x" * 3000), metadata=md, timeout=10)
            assert error.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED  # type: ignore[attr-defined]
    finally:
        code, output = stop(process, signal.SIGTERM)
    assert code == 0, output


def test_ok_throttle_budget_and_window_from_the_environment(tmp_path: Path, new_database: NewDatabase) -> None:
    db = new_database("keyscope")
    port = free_port()
    # A window of a minute: the three calls fall within it however slow the machine.
    env = server_env(KEYSCOPE_MAX_AUTH_FAILURES="2", KEYSCOPE_THROTTLE_WINDOW_SECONDS="60")
    process = start_serve(tmp_path, db, port, env=env)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = apis_pb2_grpc.ApiServiceStub(channel)
            codes = []
            for n in range(3):
                with pytest.raises(grpc.RpcError) as error:
                    md = (("authorization", f"Bearer ksroot_unknown{n}"),)
                    stub.GetApi(apis_pb2.GetApiRequest(api_id="api_x"), metadata=md, timeout=10)
                codes.append(error.value.code())  # type: ignore[attr-defined]
    finally:
        code, output = stop(process, signal.SIGTERM)
    assert code == 0, output
    assert codes == [grpc.StatusCode.UNAUTHENTICATED] * 2 + [grpc.StatusCode.RESOURCE_EXHAUSTED]


@pytest.mark.parametrize(
    "flags", [["--throttle-window", "0"], ["--max-auth-failures", "-1"], ["--max-unknown-keys", "-1"]]
)
def test_invalid_argument_throttle_flags(tmp_path: Path, flags: list[str]) -> None:
    result = run(tmp_path, "serve", "--db", str(tmp_path / "k.db"), "--port", "0", *flags)
    assert result.returncode == 2
    assert "--throttle-window" in result.stderr or "--max-auth-failures" in result.stderr


HEALTH_CHECK = {"grpc_service": "grpc.health.v1.Health", "grpc_method": "Check", "grpc_type": "unary"}


def test_ok_metrics_port_from_the_environment(tmp_path: Path, new_database: NewDatabase) -> None:
    db, log = new_database("keyscope"), tmp_path / "serve.log"
    process = start_serve(tmp_path, db, free_port(), env=server_env(KEYSCOPE_METRICS_PORT="0"), log=log)
    try:
        # Port 0: a free one, which the log names.
        match = re.search(r"metrics on http://127\.0\.0\.1:(\d+)/metrics", log.read_text())
        assert match is not None, log.read_text()
        samples = scrape(int(match[1]))
        assert samples.get("grpc_server_handled_total", **HEALTH_CHECK, grpc_code="OK") == 1  # start_serve's check
    finally:
        code, _ = stop(process, signal.SIGTERM)
    assert code == 0, log.read_text()


def test_ok_metrics_port_flag_and_off_by_default(tmp_path: Path, new_database: NewDatabase) -> None:
    db, metrics_port = new_database("keyscope"), free_port()
    process = start_serve(tmp_path, db, free_port(), "--metrics-port", str(metrics_port))
    try:
        assert scrape(metrics_port).get("grpc_server_started_total", **HEALTH_CHECK) == 1
    finally:
        code, output = stop(process, signal.SIGTERM)
    assert code == 0, output
    assert f"metrics on http://127.0.0.1:{metrics_port}/metrics" in output

    process = start_serve(tmp_path, db, free_port())
    code, output = stop(process, signal.SIGTERM)
    assert code == 0, output
    assert "metrics on http" not in output


def test_invalid_argument_metrics_port_out_of_range(tmp_path: Path) -> None:
    result = run(tmp_path, "serve", "--db", str(tmp_path / "keyscope.db"), "--metrics-port", "70000")
    assert result.returncode == 2
    assert "--metrics-port must be a port number" in result.stderr
