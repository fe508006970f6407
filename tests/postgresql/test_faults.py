"""PostgreSQL failing under a loaded server: stopped, crashed and restarted, hung; a connection killed inside a
transaction; the Keyscope server itself killed.

While the database cannot serve, every call fails UNAVAILABLE (retryable, nothing half-done), each within its
deadline, as the connect and statement timeouts bound every wait; health reports NOT_SERVING; and once the
database is back the same server serves again without a restart. No write that was acknowledged is ever lost: each
key holds the set of its last acknowledged SetPermissions, or of a later one whose answer was lost, and every
acknowledged revision has its audit event.

These tests stop and hang PostgreSQL, so they run on a cluster of this module's own, never the run's shared one,
each test on a new, empty database of it.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import os
import signal
import socket
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import grpc
import pytest
import pytest_asyncio

from keyscope.v1 import keys_pb2
from keyscope_server.cli import EXAMPLE_ROOT_KEY
from keyscope_server.errors import StoreUnavailable
from keyscope_server.factory import ServerConfig
from keyscope_server.store import root_keys
from keyscope_server.store.engine import Tables
from keyscope_server.store.engine_store import EngineStore
from keyscope_server.store.engines import PostgresSettings, open_store
from keyscope_server.store.snapshot import StoreSnapshot
from tests import health
from tests.client import Caller
from tests.conftest import TEST_CLUSTER_SETTINGS
from tests.health import Serving
from tests.polling import until
from tests.postgresql.backends import lock_waiters
from tests.postgresql.change_records import key_change
from tests.postgresql_cluster import Cluster, running_cluster
from tests.processes import children_of, create_root_key, free_port, start_serve, stop

pytestmark = pytest.mark.asyncio

Code = keys_pb2.VerifyKeyResponse.Code

# What `serve --db-timeout 1 --db-pool-size 4` runs with: a pool smaller than the load, so calls queue for it.
SETTINGS = PostgresSettings(pool_size=4, connect_timeout_seconds=1, statement_timeout_seconds=1)
PROBE_SECONDS = 0.1
DEADLINE_SECONDS = 10.0  # each call's: ten times the database timeout
WAIT_SECONDS = 30.0  # for the server or the load to reach a state
WRITERS = 12
BACKOFF_SECONDS = 0.02  # a refused caller waits this long before its next call, as retrying clients do

_databases = itertools.count()


# -- the module's cluster, and a database per test ---------------------------------------------------------


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    with running_cluster(TEST_CLUSTER_SETTINGS) as cluster:
        yield cluster


def postgres_processes(cluster: Cluster) -> list[int]:
    """The postmaster and every process it started (backends, checkpointer, WAL writer...)."""
    postmaster = int((cluster.data / "postmaster.pid").read_text().split()[0])
    return [postmaster, *children_of(postmaster)]


def ensure_running(cluster: Cluster) -> None:
    """Whatever a failed test left behind: the cluster started, answering."""
    if cluster.pg_ctl("status", check=False).returncode != 0:
        cluster.start()


@pytest.fixture
def database(cluster: Cluster) -> Iterator[str]:
    """The URL of a new, empty database on the module's cluster: the first store opened on it migrates it."""
    name = f"faults{next(_databases)}"
    cluster.psql(f"CREATE DATABASE {name}")
    yield cluster.url(name)
    ensure_running(cluster)
    cluster.psql(f"DROP DATABASE {name} WITH (FORCE)")


@pytest_asyncio.fixture
async def store(database: str) -> AsyncIterator[EngineStore]:
    """conftest's store, on this module's cluster, with bounds of a second (conftest's admin and channel use it)."""
    opened = await open_store(database, postgres=SETTINGS)
    yield opened
    await opened.close()


@pytest.fixture
def server_config() -> ServerConfig:
    """conftest's server, probing the store every PROBE_SECONDS so that health follows the database closely."""
    return ServerConfig(host="127.0.0.1", port=0, store_probe_seconds=PROBE_SECONDS)


# -- health ---------------------------------------------------------------------------------------------


async def health_turns(channel: grpc.aio.Channel, status: int) -> None:
    """Waits until every health name reports `status`; fails after WAIT_SECONDS."""
    await health.health_turns(channel, status, WAIT_SECONDS, PROBE_SECONDS / 2)


# -- the load: writers replacing their keys' permissions, and checking them by VerifyKey ------------------


def requested(writer: int, n: int) -> list[str]:
    """The n-th set writer `writer` asks for; its key is created with set 0. No two sets share a name."""
    return [f"w{writer}.n{n}.p{i}" for i in range(3)]


@dataclass(frozen=True)
class Acknowledged:
    """A write the server answered OK: the revision it returned, and what it made of the key."""

    revision: int
    action: str
    key_id: str
    permissions: list[str]


@dataclass
class Writer:
    """One caller replacing its own key's direct permissions, one request after another."""

    index: int
    key_id: str
    secret: str
    acknowledged: int = 0  # n of the last set answered OK
    sent: int = 0  # n of the last set sent
    refused: int = 0

    def may_hold(self) -> list[list[str]]:
        """The sets the key may hold: the last acknowledged one, or one sent after it and never answered OK (its
        commit may have happened before the answer was lost)."""
        return [requested(self.index, n) for n in range(self.acknowledged, self.sent + 1)]


@dataclass
class Load:
    caller: Caller
    writers: list[Writer]
    acknowledged: list[Acknowledged] = field(default_factory=list)
    refusals: Counter[grpc.StatusCode] = field(default_factory=Counter)
    wrong: list[str] = field(default_factory=list)  # answers that contradict an acknowledged write
    stopping: bool = False
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    @classmethod
    async def start(cls, caller: Caller) -> Load:
        api = await caller.make_api(name="load")
        writers = []
        for i in range(WRITERS):
            key, secret = await caller.make_key(api.id, requested(i, 0))
            writers.append(Writer(i, key.id, secret))
        load = cls(caller, writers)
        load.tasks = [asyncio.create_task(load._write(w)) for w in writers]
        return load

    async def acknowledged_more(self, than: int, what: str) -> None:
        await until(lambda: len(self.acknowledged) >= than, what, WAIT_SECONDS)

    async def stop(self) -> None:
        self.stopping = True
        await asyncio.gather(*self.tasks)

    async def _write(self, w: Writer) -> None:
        keys, md = self.caller.keys, self.caller.md
        while not self.stopping:
            w.sent += 1
            names = requested(w.index, w.sent)
            try:
                answer = await keys.SetPermissions(
                    keys_pb2.SetPermissionsRequest(key_id=w.key_id, permissions=names),
                    metadata=md,
                    timeout=DEADLINE_SECONDS,
                )
                w.acknowledged = w.sent
                self.acknowledged.append(Acknowledged(answer.revision, "SetPermissions", w.key_id, names))
                # The next call, on the same server, sees what was just acknowledged.
                verified = await keys.VerifyKey(
                    keys_pb2.VerifyKeyRequest(key=w.secret), metadata=md, timeout=DEADLINE_SECONDS
                )
                if verified.code != Code.CODE_VALID or sorted(verified.permissions) not in w.may_hold():
                    self.wrong.append(f"writer {w.index}: VerifyKey answered {verified} after set n{w.acknowledged}")
            except grpc.aio.AioRpcError as e:
                w.refused += 1
                self.refusals[e.code()] += 1
                await asyncio.sleep(BACKOFF_SECONDS)


def direct_permissions(snapshot: StoreSnapshot) -> dict[str, list[str]]:
    names = {p.id: p.name for p in snapshot.permissions}
    held: dict[str, list[str]] = defaultdict(list)
    for key_id, permission_id in snapshot.key_permissions:
        held[key_id].append(names[permission_id])
    return {key_id: sorted(found) for key_id, found in held.items()}


def lost_writes(snapshot: StoreSnapshot, acknowledged: list[Acknowledged], writers: list[Writer]) -> list[str]:
    """Every way in which `snapshot` contradicts a write that was acknowledged."""
    problems = []
    held = direct_permissions(snapshot)
    events = {event.revision: event for event in snapshot.audit_events}
    revisions = [a.revision for a in acknowledged]
    if len(set(revisions)) != len(revisions):
        problems.append("a revision was acknowledged twice: one write was lost and its revision handed out again")
    if revisions and snapshot.revision < max(revisions):
        problems.append(f"the store is at revision {snapshot.revision}, below acknowledged {max(revisions)}")
    for a in acknowledged:
        event = events.get(a.revision)
        if event is None or (event.action, event.resource_id) != (a.action, a.key_id):
            problems.append(f"revision {a.revision} ({a.action} of {a.key_id}) has no audit event of it: {event}")
        elif event.after is None or event.after["permissions"] != a.permissions:
            problems.append(f"revision {a.revision}'s audit event says {event.after}, not {a.permissions}")
        if a.action == "CreateKey" and held.get(a.key_id) != a.permissions:
            problems.append(f"key {a.key_id}, created with {a.permissions}, holds {held.get(a.key_id)}")
    for w in writers:
        if held.get(w.key_id) not in w.may_hold():
            problems.append(
                f"writer {w.index}'s key holds {held.get(w.key_id)}: not set n{w.acknowledged} (acknowledged) nor"
                f" one sent after it (n{w.acknowledged + 1}..n{w.sent})"
            )
    return problems


# -- opening a store on a database that is not there ------------------------------------------------------


async def test_unavailable_open_when_nothing_listens() -> None:
    url = f"postgresql://keyscope@127.0.0.1:{free_port()}/keyscope"
    # Far past the one-second connect bound: an open that hangs fails here as a timeout, not as the error.
    with pytest.raises(StoreUnavailable):
        await asyncio.wait_for(open_store(url, postgres=SETTINGS), DEADLINE_SECONDS)


async def test_unavailable_open_when_the_database_never_answers() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()  # connections complete in the kernel's backlog; nobody reads them or answers
        url = f"postgresql://keyscope@127.0.0.1:{sock.getsockname()[1]}/keyscope"
        with pytest.raises(StoreUnavailable):
            await asyncio.wait_for(open_store(url, postgres=SETTINGS), DEADLINE_SECONDS)


# -- PostgreSQL stopped, crashed, hung, under a running server ---------------------------------------------


async def test_unavailable_while_postgresql_is_stopped_then_serves_again(
    cluster: Cluster, store: EngineStore, channel: grpc.aio.Channel, admin: Caller
) -> None:
    load = await Load.start(admin)
    try:
        await load.acknowledged_more(100, "writes acknowledged before the stop")
        await asyncio.to_thread(cluster.stop, "fast")
        await health_turns(channel, Serving.NOT_SERVING)
        refused = load.refusals.total()
        await until(lambda: load.refusals.total() > refused + WRITERS, "calls refused while PostgreSQL is down")
        acknowledged = len(load.acknowledged)
        await asyncio.to_thread(cluster.start)
        await health_turns(channel, Serving.SERVING)
        await load.acknowledged_more(acknowledged + 100, "writes acknowledged once PostgreSQL is back")
    finally:
        await load.stop()
    assert set(load.refusals) == {grpc.StatusCode.UNAVAILABLE}, load.refusals
    assert load.wrong == []
    assert lost_writes(await store.export_snapshot(), load.acknowledged, load.writers) == []


async def test_unavailable_while_postgresql_restarts_after_a_crash_then_serves_again(
    cluster: Cluster, store: EngineStore, channel: grpc.aio.Channel, admin: Caller
) -> None:
    load = await Load.start(admin)
    try:
        await load.acknowledged_more(100, "writes acknowledged before the crash")
        # Immediate: every backend killed at once, no checkpoint, recovery from the WAL at the start.
        await asyncio.to_thread(cluster.restart, "immediate")
        acknowledged = len(load.acknowledged)
        await health_turns(channel, Serving.SERVING)
        await load.acknowledged_more(acknowledged + 100, "writes acknowledged after the restart")
    finally:
        await load.stop()
    # Calls were in flight when the backends died: they failed, and only as UNAVAILABLE (never INTERNAL, UNKNOWN).
    assert load.refusals and set(load.refusals) == {grpc.StatusCode.UNAVAILABLE}, load.refusals
    assert load.wrong == []
    assert lost_writes(await store.export_snapshot(), load.acknowledged, load.writers) == []


async def test_unavailable_within_the_deadline_while_postgresql_hangs_then_serves_again(
    cluster: Cluster, store: EngineStore, channel: grpc.aio.Channel, admin: Caller
) -> None:
    load = await Load.start(admin)
    try:
        await load.acknowledged_more(100, "writes acknowledged before the hang")
        # A database that stops answering (a frozen host, a network that drops everything): connections stay open
        # and connecting still succeeds in the kernel, but no answer ever comes. Only the timeouts end the waits.
        processes = postgres_processes(cluster)
        refused = {w.index: w.refused for w in load.writers}
        for pid in processes:
            os.kill(pid, signal.SIGSTOP)
        try:
            await health_turns(channel, Serving.NOT_SERVING)
            # Every writer's call in flight at the hang ends, refused, within its deadline.
            await until(
                lambda: all(w.refused > refused[w.index] for w in load.writers),
                lambda: f"every writer refused during the hang; refusals {load.refusals}",
                WAIT_SECONDS,
            )
        finally:
            for pid in processes:
                os.kill(pid, signal.SIGCONT)
        acknowledged = len(load.acknowledged)
        await health_turns(channel, Serving.SERVING)
        await load.acknowledged_more(acknowledged + 100, "writes acknowledged once PostgreSQL answers again")
    finally:
        await load.stop()
    # Never DEADLINE_EXCEEDED: the database's bounds (a second each) end every wait before the call's deadline.
    assert set(load.refusals) == {grpc.StatusCode.UNAVAILABLE}, load.refusals
    assert load.wrong == []
    assert lost_writes(await store.export_snapshot(), load.acknowledged, load.writers) == []


# -- a connection killed inside a transaction --------------------------------------------------------------


async def _half_done(tx: Tables, key_id: str, permission_id: str, gate_id: str) -> int:
    """A write that stops halfway: on the gate root key's row, which the test holds locked."""
    revision = await tx.changes.record(key_change(key_id, [permission_id]))
    await tx.root_keys.set_enabled(gate_id, True)  # waits for the test's lock
    await tx.keys.update(key_id, "the rest of it", True, None)  # once the connection is gone
    return revision


async def test_unavailable_when_the_connection_dies_mid_transaction_and_nothing_is_written(
    store: EngineStore, database: str, admin: Caller
) -> None:
    api = await admin.make_api(["docs.read", "docs.write"])
    key, _ = await admin.make_key(api.id, ["docs.read"])
    catalog = await admin.catalog(api.id)
    gate = await store.create_root_key("gate", hashlib.sha256(b"gate").digest(), ())
    before = await store.export_snapshot()
    holder = await asyncpg.connect(database)
    try:
        async with holder.transaction():
            await holder.execute("SELECT 1 FROM root_keys WHERE id = $1 FOR UPDATE", gate.id)
            # Two writes of one batch (submitted together, they share its transaction): a whole one, then the
            # half done one.
            whole = asyncio.create_task(
                store.engine.write(
                    root_keys.create_root_key, "same batch", hashlib.sha256(b"unused").digest(), (), None
                )
            )
            killed = asyncio.create_task(store.engine.write(_half_done, key.id, catalog["docs.write"], gate.id))
            [backend] = await until(lambda: lock_waiters(database), "the write waiting on the gate's row")
            # Waits until the backend is gone: the write resumes on a connection that is no more.
            assert await holder.fetchval("SELECT pg_terminate_backend($1, 10000)", backend)
            for write in (whole, killed):
                with pytest.raises(StoreUnavailable):
                    await asyncio.wait_for(write, WAIT_SECONDS)
    finally:
        await holder.close()
    assert await store.export_snapshot() == before
    # The writer replaced the dead connection: the next write, through the same store, commits.
    written, _ = await admin.make_key(api.id, ["docs.write"])
    after = await store.export_snapshot()
    assert after.revision == before.revision + 1
    assert direct_permissions(after)[key.id] == ["docs.read"]
    assert direct_permissions(after)[written.id] == ["docs.write"]


# -- the Keyscope server killed under load -----------------------------------------------------------------


async def test_ok_every_acknowledged_write_survives_sigkill_of_the_server(tmp_path: Path, database: str) -> None:
    root_key = create_root_key(tmp_path, database, *EXAMPLE_ROOT_KEY)
    port = free_port()
    process = start_serve(tmp_path, database, port, "--db-timeout", "1", log=tmp_path / "serve.log")
    created: list[Acknowledged] = []
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            caller = Caller(channel, root_key, "")
            load = await Load.start(caller)
            api = await caller.make_api(name="created")

            async def create(creator: int) -> None:
                for n in itertools.count():
                    if load.stopping:
                        return
                    names = [f"c{creator}.n{n}"]
                    try:
                        answer = await caller.keys.CreateKey(
                            keys_pb2.CreateKeyRequest(api_id=api.id, permissions=names),
                            metadata=caller.md,
                            timeout=DEADLINE_SECONDS,
                        )
                    except grpc.aio.AioRpcError as e:
                        load.refusals[e.code()] += 1
                        return  # the server is gone
                    created.append(Acknowledged(answer.revision, "CreateKey", answer.key.id, names))

            creators = [asyncio.create_task(create(i)) for i in range(4)]
            try:
                await until(lambda: len(load.acknowledged) + len(created) >= 300, "writes acknowledged", WAIT_SECONDS)
                # Right on an acknowledgement, with other writes on their way: a write acknowledged before its
                # commit would be lost here.
                process.kill()
                assert await asyncio.to_thread(process.wait, WAIT_SECONDS) == -signal.SIGKILL
            finally:
                await load.stop()
                await asyncio.wait_for(asyncio.gather(*creators), WAIT_SECONDS)
    finally:
        if process.poll() is None:
            stop(process, signal.SIGKILL)
    assert created and load.acknowledged
    assert set(load.refusals) == {grpc.StatusCode.UNAVAILABLE}, load.refusals
    assert load.wrong == []
    reopened = await open_store(database, postgres=SETTINGS)
    try:
        snapshot = await reopened.export_snapshot()
    finally:
        await reopened.close()
    assert lost_writes(snapshot, load.acknowledged + created, load.writers) == []
