"""The database's password never shows: not in logs, errors, command lines Keyscope makes, or what the store keeps.

A role that must log in with a password (tests.postgresql_cluster.PASSWORD_ROLE: SCRAM over TCP) owns an empty
database; servers and commands get its URL, password included, the ways people give it (`--db`, KEYSCOPE_DB,
PGPASSWORD) and migrate the database as that role. The secret watch (tests/secret_watch.py) searches every log,
subprocess output and error of the run for the password too, and these tests look where it does not: the workers'
command lines, the store's snapshot and audit trail.
"""

from __future__ import annotations

import itertools
import secrets
import signal
import subprocess
import sys
import traceback
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from keyscope.v1 import audit_pb2
from keyscope_server.cli import EXAMPLE_ROOT_KEY
from keyscope_server.credentials import ROOT_KEY_PREFIX, hash_secret, new_secret
from keyscope_server.errors import StoreUnavailable
from keyscope_server.factory import ServerConfig, start_server
from keyscope_server.store.engines import open_store
from tests.client import Caller
from tests.conftest import ClusterAdmin
from tests.postgresql_cluster import PASSWORD_ROLE, Cluster
from tests.processes import children_of, free_port, run, server_env, start_serve, stop

pytestmark = pytest.mark.asyncio

_databases = itertools.count()


@pytest.fixture
def password(postgres_password: str) -> str:
    return postgres_password


@pytest.fixture
def database(postgres_admin: ClusterAdmin, password: str) -> Iterator[str]:
    """The name of a new, empty database that PASSWORD_ROLE owns: whatever opens it first migrates it as the role."""
    name = f"secrets{next(_databases)}"
    postgres_admin.execute(f"CREATE DATABASE {name} OWNER {PASSWORD_ROLE}")
    yield name
    postgres_admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


async def new_root_key(url: str) -> str:
    store = await open_store(url)
    try:
        secret = new_secret(ROOT_KEY_PREFIX)
        await store.create_root_key("secrets test", hash_secret(secret), EXAMPLE_ROOT_KEY)
    finally:
        await store.close()
    return secret


async def create_api(port: int, root_key: str) -> str:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        api = await Caller(channel, root_key, "").make_api(["documents.read"], name="behind a password")
    return api.id


def command_line(pid: int) -> bytes:
    return Path(f"/proc/{pid}/cmdline").read_bytes()


# -- serving -------------------------------------------------------------------------------------------


async def test_ok_workers_serve_with_the_password_in_the_url_and_never_show_it(
    tmp_path: Path, postgres_cluster: Cluster, password: str, database: str
) -> None:
    url, described = (
        postgres_cluster.url(database, PASSWORD_ROLE, password),
        postgres_cluster.url(database, PASSWORD_ROLE),
    )
    log, port = tmp_path / "serve.log", free_port()
    supervisor = start_serve(tmp_path, url, port, "--workers", "2", log=log)  # migrates the database as the role
    try:
        # Given by --db here, so the supervisor's own command line holds it: what the workers' must not.
        assert password.encode() in command_line(supervisor.pid)
        workers = children_of(supervisor.pid)
        assert len(workers) == 2
        for pid in workers:
            # Command lines are there for anyone on the host to read (`ps`): the URL reaches workers otherwise.
            assert password.encode() not in command_line(pid)
            assert b"postgresql://" not in command_line(pid)
        assert await create_api(port, await new_root_key(url))
    finally:
        code, _ = stop(supervisor, signal.SIGTERM)
    assert code == 0
    text = log.read_text()
    assert password not in text
    # The log names the database, as the URL without its password, once per worker.
    assert text.count(f", database {described}, event loop") == 2, text


async def test_ok_serves_with_the_password_in_pgpassword(
    tmp_path: Path, postgres_cluster: Cluster, password: str, database: str
) -> None:
    url = postgres_cluster.url(database, PASSWORD_ROLE)  # no password: libpq's variable gives it, as for psql
    log, port = tmp_path / "serve.log", free_port()
    process = start_serve(tmp_path, url, port, env=server_env(PGPASSWORD=password), log=log)
    try:
        assert password.encode() not in command_line(process.pid)
        assert await create_api(port, await new_root_key(postgres_cluster.url(database, PASSWORD_ROLE, password)))
    finally:
        code, _ = stop(process, signal.SIGTERM)
    assert code == 0
    text = log.read_text()
    assert password not in text
    assert f", database {url}, event loop" in text


async def test_ok_commands_take_the_url_from_keyscope_db(
    tmp_path: Path, postgres_cluster: Cluster, password: str, database: str
) -> None:
    url = postgres_cluster.url(database, PASSWORD_ROLE, password)
    await new_root_key(url)
    done = subprocess.run(
        [sys.executable, "-m", "keyscope_server", "list-root-keys"],
        cwd=tmp_path,
        env=server_env(KEYSCOPE_DB=url),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "secrets test" in done.stdout
    assert password not in done.stdout + done.stderr


# -- refused ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "command",
    [["list-root-keys"], ["create-root-key", "--all"], ["serve", "--port", "0"], ["serve", "--workers", "2"]],
    ids=" ".join,
)
async def test_unavailable_with_a_wrong_password_and_neither_password_shows(
    tmp_path: Path, postgres_cluster: Cluster, password: str, database: str, command: list[str]
) -> None:
    wrong = secrets.token_hex(16)
    flags = ["--port", str(free_port())] if "--workers" in command else []
    done = run(tmp_path, *command, *flags, "--db", postgres_cluster.url(database, PASSWORD_ROLE, wrong))
    output = done.stdout + done.stderr
    assert done.returncode == 1, output
    assert wrong not in output and password not in output
    # Said the way the command says every failure, naming what is wrong; not a stack trace of the driver's.
    assert "password authentication failed" in output, output
    assert "Traceback" not in output, output
    assert "error: " in done.stderr, output


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://u:secretpw@host:notaport/db",
        "postgresql://u:secretpw@[::1/db",
        "postgresql://u:secretpw@127.0.0.1:99999/db",
        "postgresql://u:secretpw@127.0.0.1:1/db?sslmode=sometimes",
    ],
    ids=["port not a number", "bracket not closed", "port out of range", "unknown sslmode"],
)
async def test_unavailable_with_a_malformed_url_that_is_never_echoed(tmp_path: Path, url: str) -> None:
    # Too short for the secret watch to search for (it needs 16 characters): looked for here.
    done = run(tmp_path, "list-root-keys", "--db", url, "--db-timeout", "1")
    output = done.stdout + done.stderr
    assert done.returncode == 1, output
    assert "secretpw" not in output
    assert "Traceback" not in output, output
    assert "error: " in done.stderr, output


async def test_unavailable_error_of_an_unreachable_database_names_no_password(password: str) -> None:
    port = free_port()  # nothing listens on it
    with pytest.raises(StoreUnavailable) as e:
        await open_store(f"postgresql://{PASSWORD_ROLE}:{password}@127.0.0.1:{port}/keyscope")
    # The error and every error it came from, as a traceback would print them.
    assert password not in "".join(traceback.format_exception(e.value))


# -- what the store keeps ---------------------------------------------------------------------------------


async def test_ok_the_audit_trail_and_snapshot_hold_no_password(
    postgres_cluster: Cluster, password: str, database: str
) -> None:
    store = await open_store(postgres_cluster.url(database, PASSWORD_ROLE, password))
    running = await start_server(store, ServerConfig(host="127.0.0.1", port=0))
    try:
        secret = new_secret(ROOT_KEY_PREFIX)
        root = await store.create_root_key("secrets test", hash_secret(secret), EXAMPLE_ROOT_KEY)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            caller = Caller(channel, secret, root.id)
            api = await caller.make_api(["documents.read"])
            await caller.make_key(api.id, ["documents.read"])
            events = await caller.audit.ListAuditEvents(audit_pb2.ListAuditEventsRequest(), metadata=caller.md)
        snapshot = await store.export_snapshot()
    finally:
        await running.stop(None)
        await store.close()
    assert len(events.events) == len(snapshot.audit_events) == 3  # the root key, the API, the key
    assert password not in str(events)
    assert password not in repr(snapshot)
