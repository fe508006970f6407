"""Every test gets a real server on 127.0.0.1:0 over a fresh store, called through generated stubs.

`store` runs each test once per engine (the test id names it: `[sqlite]`, `[postgresql]`); adding an engine to
keyscope_server.store.engines.ENGINES runs every RPC module on it too. PostgreSQL tests share one real PostgreSQL
server, which the run starts itself (tests.postgresql_cluster), and each test gets databases of its own, copied from a
migrated template. tests/sqlite/ and tests/postgresql/ hold each engine's own tests.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import TypeVar

import asyncpg
import grpc
import pytest
import pytest_asyncio
import uvloop
from hypothesis.configuration import set_hypothesis_home_dir

from keyscope_server.cli import EXAMPLE_ROOT_KEY
from keyscope_server.credentials import ROOT_KEY_PREFIX, hash_secret, new_secret
from keyscope_server.factory import RunningServer, ServerConfig, start_server
from keyscope_server.store import Store, open_store, prepare_store
from keyscope_server.store.engines import ENGINES
from tests.client import Caller
from tests.loop_thread import LoopThread
from tests.postgresql_cluster import PASSWORD_ROLE, Cluster, PostgresMissing, find_binaries, running_cluster

# Every secret the run creates is searched for in its logs, errors and stores (issue 4).
pytest_plugins = ["tests.secret_watch"]

T = TypeVar("T")
MakeCaller = Callable[[Sequence[str]], Awaitable[Caller]]
UnusableCaller = Callable[[str], Awaitable[Caller]]
OpenStore = Callable[[str], Awaitable[Store]]
NewDatabase = Callable[[str], str]
# The ways a root key stops authenticating, as `unusable_caller` takes them.
UNUSABLE_ROOT_KEYS = ["disabled", "expired", "deleted"]


def pytest_configure(config: pytest.Config) -> None:
    """Every run covers PostgreSQL: without its server binaries the run stops here, saying how to get them."""
    try:
        find_binaries()
    except PostgresMissing as missing:
        pytest.exit(str(missing), returncode=1)


@pytest.fixture(autouse=True, scope="session")
def hypothesis_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Hypothesis writes caches (Unicode tables, constants of the code under test) to ./.hypothesis even with no
    database: keep them out of the repository."""
    set_hypothesis_home_dir(tmp_path_factory.mktemp("hypothesis"))
    yield
    set_hypothesis_home_dir(None)


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "keyscope.db"


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest) -> str:
    """The engine this test runs on."""
    return str(request.param)


# Durability off (the WAL is still written at each commit, so a crash of PostgreSQL itself loses nothing): the
# machine is not what these tests are about.
# The WAL is kept whole, for the secret watch to search at the end of the run.
TEST_CLUSTER_SETTINGS = {"fsync": "off", "full_page_writes": "off", "wal_keep_size": "'4GB'"}
TEMPLATE = "keyscope_template"
_numbers = itertools.count()


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[Cluster]:
    """The run's PostgreSQL server, started when a test first needs it; a migrated template database on it."""
    with running_cluster(TEST_CLUSTER_SETTINGS) as cluster:
        cluster.psql(f"CREATE DATABASE {TEMPLATE}")
        # On a thread of its own: the first test to need the cluster may be asking from inside its event loop.
        with concurrent.futures.ThreadPoolExecutor(1) as thread:
            thread.submit(asyncio.run, prepare_store(cluster.url(TEMPLATE))).result()
        yield cluster
        from tests import secret_watch  # here: conftest is imported before the plugin it registers

        watch = secret_watch.active()
        if watch is not None:
            watch.scan_postgres_cluster(cluster.data)


class ClusterAdmin:
    """Statements run as the cluster's superuser, from synchronous code too: one connection, on an event loop of
    its own thread (faster than a psql process per statement)."""

    def __init__(self, cluster: Cluster) -> None:
        self._loop = LoopThread("postgres-admin")
        self._conn: asyncpg.Connection = self._loop.run(asyncpg.connect(cluster.url()))

    def execute(self, sql: str) -> None:
        self._loop.run(self._conn.execute(sql))

    def close(self) -> None:
        try:
            self._loop.run(self._conn.close())
        finally:
            self._loop.close()


@pytest.fixture(scope="session")
def postgres_admin(postgres_cluster: Cluster) -> Iterator[ClusterAdmin]:
    admin = ClusterAdmin(postgres_cluster)
    yield admin
    admin.close()


@pytest.fixture(scope="session")
def postgres_password(postgres_admin: ClusterAdmin) -> str:
    """The password of tests.postgresql_cluster.PASSWORD_ROLE (a role that must give one over TCP): random, made
    for this run, and searched for by the secret watch like a key's secret (hex: one run of the characters the
    watch searches)."""
    from tests import secret_watch  # here: conftest is imported before the plugin it registers

    password = secrets.token_hex(16)
    watch = secret_watch.active()
    if watch is not None:
        watch.add_secret(password, "database password")
    postgres_admin.execute(f"CREATE ROLE {PASSWORD_ROLE} LOGIN PASSWORD '{password}'")
    return password


@pytest.fixture
def new_database(engine: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[NewDatabase]:
    """`new_database("name")`: the `--db` value of a new, empty database of the test's engine (the same one for
    the same name), dropped after the test."""
    if engine == "sqlite":
        yield lambda name: str(tmp_path / f"{name}.db")
        return
    cluster: Cluster = request.getfixturevalue("postgres_cluster")
    admin: ClusterAdmin = request.getfixturevalue("postgres_admin")
    made: dict[str, str] = {}

    def new(name: str) -> str:
        if name not in made:
            database = f"t{next(_numbers)}_{name.lower()}"
            admin.execute(f"CREATE DATABASE {database} TEMPLATE {TEMPLATE} STRATEGY FILE_COPY")
            made[name] = cluster.url(database)
        return made[name]

    yield new
    for url in made.values():
        admin.execute(f"DROP DATABASE IF EXISTS {url.rsplit('/', 1)[1]} WITH (FORCE)")


@pytest_asyncio.fixture
async def open_test_store(new_database: NewDatabase) -> AsyncIterator[OpenStore]:
    """`await open_test_store("name")`: a fresh store of the test's engine, closed after the test."""
    opened: list[Store] = []

    async def open_(name: str) -> Store:
        opened.append(await open_store(new_database(name)))
        return opened[-1]

    yield open_
    for store in opened:
        await store.close()


@pytest_asyncio.fixture
async def store(open_test_store: OpenStore, db_path: Path) -> Store:
    return await open_test_store(db_path.stem)


@pytest.fixture
def server_config() -> ServerConfig:
    """How `server` is started: a module may override this (to probe its store more often, say)."""
    return ServerConfig(host="127.0.0.1", port=0)


@pytest_asyncio.fixture
async def server(store: Store, server_config: ServerConfig) -> AsyncIterator[RunningServer]:
    running = await start_server(store, server_config)
    yield running
    await running.stop(None)


@pytest_asyncio.fixture
async def channel(server: RunningServer) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        yield channel


@pytest.fixture
def make_caller(store: Store, channel: grpc.aio.Channel) -> MakeCaller:
    """`await make_caller(["api.*.verify_key"])`: a caller with a new root key holding those permissions."""

    async def make(permissions: Sequence[str]) -> Caller:
        secret = new_secret(ROOT_KEY_PREFIX)
        record = await store.create_root_key("test", hash_secret(secret), permissions)
        return Caller(channel, secret, record.id)

    return make


@pytest_asyncio.fixture
async def admin(make_caller: MakeCaller) -> Caller:
    """A caller holding every root-key permission on every API."""
    return await make_caller(EXAMPLE_ROOT_KEY)


@pytest.fixture
def unusable_caller(store: Store, channel: grpc.aio.Channel, make_caller: MakeCaller) -> UnusableCaller:
    """`await unusable_caller("disabled" | "expired" | "deleted")`: a caller whose root key holds every
    permission but no longer authenticates."""

    async def make(how: str) -> Caller:
        if how == "expired":
            secret = new_secret(ROOT_KEY_PREFIX)
            # Expired a millisecond ago: at the edge, where a lenient expiry check would let it through.
            record = await store.create_root_key(
                "expired", hash_secret(secret), EXAMPLE_ROOT_KEY, expires_ms=int(time.time() * 1000) - 1
            )
            return Caller(channel, secret, record.id)
        caller = await make_caller(EXAMPLE_ROOT_KEY)
        if how == "disabled":
            await store.set_root_key_enabled(caller.root_key_id, False)
        elif how == "deleted":
            await store.delete_root_key(caller.root_key_id)
        else:
            raise ValueError(f"not one of {UNUSABLE_ROOT_KEYS}: {how!r}")
        return caller

    return make


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> dict[str, Callable[[], asyncio.AbstractEventLoop]]:
    """Every asyncio test runs on the loop `serve` runs on by default (uvloop), servers and fixtures included."""
    return {"uvloop": uvloop.new_event_loop}
