"""The suite-wide leak check (tests/secret_watch.py) can fail: leaks planted in a watch of their own are reported.

The planted secrets are made here, not by `new_secret`, so the session's own watch never learns them and the
real run is not failed by them.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import secrets
import sqlite3
import string
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2

from keyscope.v1 import apis_pb2, keys_pb2, keys_pb2_grpc
from keyscope_server.factory import RunningServer
from tests.client import Caller
from tests.processes import ROOT
from tests.secret_recording import AioRecorder, SyncRecorder
from tests.secret_search import CAPTURED, ERROR, KEY, LOG, OUTPUT, ROOT_KEY, STORE, SecretWatch, Where, fingerprint
from tests.secret_watch import active

TEST = "tests/test_example.py::test_ok_example"


def fake_secret(prefix: str = "sk") -> str:
    body = "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(32))
    return f"{prefix}_{body}"


def watch_with(*known: str) -> SecretWatch:
    """A watch of its own, during TEST, that knows these secrets."""
    watch = SecretWatch()
    watch.test = TEST
    for secret in known:
        watch.add_secret(secret)
    return watch


def log_record(msg: str, *args: object, exc_info: object = None, **extra: object) -> logging.LogRecord:
    record = logging.LogRecord("keyscope.rpc", logging.INFO, __file__, 1, msg, args, exc_info)  # type: ignore[arg-type]
    record.__dict__.update(extra)
    return record


def rpc_error(details: str, *detail_messages: error_details_pb2.ErrorInfo) -> grpc.aio.AioRpcError:
    status = status_pb2.Status(code=grpc.StatusCode.INVALID_ARGUMENT.value[0], message=details)
    for message in detail_messages:
        status.details.add().Pack(message)
    return grpc.aio.AioRpcError(
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.aio.Metadata(("x-request-id", "req_0123456789abcdef")),
        grpc.aio.Metadata(("grpc-status-details-bin", status.SerializeToString())),
        details,
        "UNKNOWN:Error received from peer",
    )


def assert_reported_without_the_secret(watch: SecretWatch, secret: str) -> None:
    report = "\n".join(watch.problems()) + watch.summary()
    assert fingerprint(secret) in report
    assert secret not in report
    assert secret.rsplit("_", 1)[1] not in report


# -- log records ------------------------------------------------------------------------------------


def test_ok_nothing_found_when_no_record_holds_a_secret() -> None:
    secret = fake_secret()
    watch = watch_with(secret, fake_secret("ksroot"))
    watch.add_log_record(log_record("%s OK caller=%s", "/keyscope.v1.KeyService/CreateKey", "root_0123456789abcdef"))
    watch.add_error(rpc_error("key_id: key-1 is not a key id"), "/keyscope.v1.KeyService/GetKey")
    assert watch.findings() == []
    assert watch.problems() == []
    assert watch.summary() == (
        "secret watch: 1 key secrets and 1 root-key secrets, searched in 1 log records, 1 errors, 0 store files:"
        " none found"
    )


def test_found_secret_in_log_message() -> None:
    secret = fake_secret()
    watch = watch_with(secret)
    watch.add_log_record(log_record("verified %s", secret))

    [finding] = watch.findings()
    assert finding.where == Where(TEST, LOG, "keyscope.rpc INFO")
    assert (finding.secret_kind, finding.match) == (KEY, "full secret")
    assert_reported_without_the_secret(watch, secret)
    assert watch.summary().endswith("1 problem(s), listed above")


def test_found_random_part_in_log_extra() -> None:
    secret = fake_secret("ksroot")
    watch = watch_with(secret)
    watch.add_log_record(log_record("authenticated", presented=secret.split("_", 1)[1]))

    [finding] = watch.findings()
    assert (finding.secret_kind, finding.match, finding.where.kind) == (ROOT_KEY, "random part", LOG)


def test_found_secret_in_exception_text_of_a_record() -> None:
    secret = fake_secret()
    watch = watch_with(secret)
    try:
        raise ValueError(f"bad key {secret}")
    except ValueError:
        watch.add_log_record(log_record("unexpected error", exc_info=sys.exc_info()))
    assert [f.where.kind for f in watch.findings()] == [LOG]


def test_found_secret_recorded_after_the_text_that_holds_it() -> None:
    # A server logs before its client sees the answer that carries the secret.
    secret = fake_secret()
    watch = watch_with()
    watch.add_log_record(log_record("created %s", secret))
    assert watch.findings() == []
    watch.add_response(keys_pb2.CreateKeyResponse(secret=secret))
    [finding] = watch.findings()
    assert finding.secret_kind == KEY


# -- errors ---------------------------------------------------------------------------------------------


def test_found_secret_in_error_details_string() -> None:
    secret = fake_secret()
    watch = watch_with(secret)
    watch.add_error(rpc_error(f"key {secret} is malformed"), "/keyscope.v1.KeyService/VerifyKey")
    [finding] = watch.findings()
    assert finding.where == Where(TEST, ERROR, "/keyscope.v1.KeyService/VerifyKey INVALID_ARGUMENT")
    assert_reported_without_the_secret(watch, secret)


def test_found_secret_in_google_rpc_status_detail() -> None:
    secret = fake_secret()
    watch = watch_with(secret)
    info = error_details_pb2.ErrorInfo(reason="MALFORMED", domain="keyscope", metadata={"key": secret})
    watch.add_error(rpc_error("the key is malformed", info), "/keyscope.v1.KeyService/VerifyKey")
    assert [f.where.kind for f in watch.findings()] == [ERROR]


# -- store files -------------------------------------------------------------------------------------


def test_found_secret_in_database_and_its_wal(tmp_path: Path) -> None:
    secret = fake_secret()
    db = tmp_path / "keyscope.db"
    connection = sqlite3.connect(db, isolation_level=None)
    try:
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("CREATE TABLE audit (event TEXT)")
        connection.execute("INSERT INTO audit VALUES (?)", (f"CreateKey answered {secret}",))
        # Open: the row is in the -wal file only.
        during = watch_with(secret)
        during.scan_directory(tmp_path)
        assert [Path(f.where.detail).name for f in during.findings()] == ["keyscope.db-wal"]
    finally:
        connection.close()
    # Closed: checkpointed into the database file, and the -wal file is gone.
    after = watch_with(secret)
    after.scan_directory(tmp_path)
    [finding] = after.findings()
    assert finding.where == Where(TEST, STORE, str(db))
    assert_reported_without_the_secret(after, secret)


def test_ok_store_files_without_secrets_are_counted(tmp_path: Path) -> None:
    connection = sqlite3.connect(tmp_path / "keyscope.db")
    connection.execute("CREATE TABLE keys (secret_hash BLOB)")
    connection.close()
    (tmp_path / "serve.log").write_text("not a store")
    watch = watch_with(fake_secret())
    watch.scan_directory(tmp_path)
    assert watch.problems() == []
    assert "0 log records, 0 errors, 1 store files: none found" in watch.summary()


@pytest.mark.asyncio
async def test_ok_a_created_keys_secret_is_not_in_the_store_files(admin: Caller, db_path: Path) -> None:
    # The SQLite engine's side of tests/test_create_key.py's check of the logical snapshot: the raw bytes on
    # disk (the database and its write-ahead log), which the session's watch also searches after every test.
    api = await admin.make_api()
    created = await admin.keys.CreateKey(keys_pb2.CreateKeyRequest(api_id=api.id, prefix="sk_live"), metadata=admin.md)
    files = list(db_path.parent.glob(db_path.name + "*"))
    assert db_path in files
    for path in files:
        assert created.secret.encode() not in path.read_bytes()


# -- subprocesses and captured output ---------------------------------------------------------------------


def test_found_secret_in_subprocess_log() -> None:
    secret = fake_secret()
    watch = watch_with(secret)
    command = [sys.executable, "-m", "keyscope_server", "serve", "--port", "50051"]
    watch.add_process_output(command, 0, "", f"INFO keyscope verified {secret}\n")
    [finding] = watch.findings()
    assert finding.where == Where(TEST, OUTPUT, "stderr of python -m keyscope_server serve --port 50051")


def test_ok_create_root_key_prints_its_secret_on_stdout_only() -> None:
    secret = fake_secret("ksroot")
    watch = watch_with()
    command = [sys.executable, "-m", "keyscope_server", "create-root-key", "--db", "x.db", "--all"]
    watch.add_process_output(command, 0, secret + "\n", "root key id: root_0123456789abcdef\n")
    assert watch.knows(secret) == ROOT_KEY
    assert watch.problems() == []
    # The same secret on stderr is a leak.
    watch.add_process_output(command, 0, fake_secret("ksroot") + "\n", f"created {secret}\n")
    assert [f.where.kind for f in watch.findings()] == [OUTPUT]


def test_found_secret_in_log_file_of_a_subprocess(tmp_path: Path) -> None:
    secret = fake_secret()
    watch = watch_with(secret)
    log = tmp_path / "serve.log"
    watch.watch_output_file(log)
    log.write_text(f"INFO keyscope.rpc VerifyKey key={secret}\n")
    watch.after_test(None)
    [finding] = watch.findings()
    assert finding.where == Where(TEST, OUTPUT, f"log file {log}")


def test_found_secret_in_captured_test_output() -> None:
    secret = fake_secret()
    watch = watch_with(secret)
    watch.add_text(CAPTURED, "stdout and stderr", "", f"E0000 grpc: metadata authorization: Bearer {secret}")
    assert [f.where.kind for f in watch.findings()] == [CAPTURED]


# -- what is recorded as a secret ---------------------------------------------------------------------


def test_ok_secret_fields_of_any_response_are_recorded() -> None:
    watch = watch_with()
    key_secret, root_secret = fake_secret(), fake_secret("ksroot")
    watch.add_response(keys_pb2.CreateKeyResponse(secret=key_secret))
    watch.add_response(keys_pb2.CreateKeyResponse(secret=root_secret))
    watch.add_response(apis_pb2.CreateApiResponse(api=apis_pb2.Api(id="api_0123456789abcdef", name=key_secret)))
    assert (watch.knows(key_secret), watch.knows(root_secret)) == (KEY, ROOT_KEY)
    assert watch.summary().startswith("secret watch: 1 key secrets and 1 root-key secrets")


def test_unsearchable_secret_is_a_problem() -> None:
    watch = watch_with("sk_short")
    [problem] = watch.problems()
    assert problem.startswith(f"cannot search for {fingerprint('sk_short')}")


# -- the recorders on real channels ----------------------------------------------------------------------


@pytest.mark.asyncio
async def test_ok_recorders_see_answers_and_errors(server: RunningServer, admin: Caller) -> None:
    api = await admin.make_api()
    target = f"127.0.0.1:{server.port}"
    watch = watch_with()
    async with grpc.aio.insecure_channel(target, interceptors=[AioRecorder(watch)]) as channel:
        keys = keys_pb2_grpc.KeyServiceStub(channel)
        created = await keys.CreateKey(keys_pb2.CreateKeyRequest(api_id=api.id), metadata=admin.md)
        with pytest.raises(grpc.aio.AioRpcError):
            await keys.GetKey(keys_pb2.GetKeyRequest(key_id="key-1"), metadata=admin.md)
    assert watch.knows(created.secret) == KEY

    def sync_calls() -> str:
        with grpc.intercept_channel(grpc.insecure_channel(target), SyncRecorder(watch)) as channel:
            stub = keys_pb2_grpc.KeyServiceStub(channel)
            with pytest.raises(grpc.RpcError):
                stub.GetKey(keys_pb2.GetKeyRequest(key_id="key-1"), metadata=admin.md, timeout=10)
            return stub.CreateKey.future(keys_pb2.CreateKeyRequest(api_id=api.id), metadata=admin.md).result(10).secret

    assert watch.knows(await asyncio.to_thread(sync_calls)) == KEY
    assert "searched in 0 log records, 2 errors, 0 store files: none found" in watch.summary()


@pytest.mark.asyncio
async def test_ok_session_watch_records_this_tests_secrets(admin: Caller, request: pytest.FixtureRequest) -> None:
    if request.config.pluginmanager.is_blocked("tests.secret_watch"):
        pytest.skip("turned off with -p no:tests.secret_watch")
    session = active()
    assert session is not None, "tests/secret_watch.py is not registered (tests/conftest.py pytest_plugins)"
    api = await admin.make_api()
    _, secret = await admin.make_key(api.id)
    assert session.knows(admin.root_key) == ROOT_KEY  # conftest's make_caller, through new_secret
    assert session.knows(secret) == KEY


# -- the run fails --------------------------------------------------------------------------------------------

LEAKY_MODULE = """
import logging

from keyscope_server.credentials import new_secret


def test_ok_leaks_a_secret():
    logging.getLogger("keyscope.rpc").debug("verified %s", new_secret("sk"))
"""


def test_found_leak_fails_the_run_and_names_the_test(tmp_path: Path) -> None:
    (tmp_path / "test_leaky.py").write_text(LEAKY_MODULE)
    plugin = ["-p", "tests.secret_watch", "-p", "no:cacheprovider", "-o", "asyncio_default_fixture_loop_scope=function"]
    result = subprocess.run(
        [sys.executable, "-m", "pytest", *plugin, "test_leaky.py"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    output = result.stdout + result.stderr
    assert result.returncode == pytest.ExitCode.TESTS_FAILED, output
    assert "1 passed" in output  # the test passed; the watch failed the run
    assert "found: key secret sha256:" in output
    assert "(full secret) in a log record [keyscope.rpc DEBUG] during test_leaky.py::test_ok_leaks_a_secret" in output
    assert "secret watch: 1 key secrets and 0 root-key secrets" in output
    assert not re.search(r"sk_[A-Za-z0-9]{32}", output)
