"""The PostgreSQL schema: numbered migrations applied at start, once, however many servers start together."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from keyscope_server.errors import StoreUnavailable
from keyscope_server.store import open_store
from keyscope_server.store.postgresql.schema import LATEST_VERSION
from tests.conftest import ClusterAdmin
from tests.postgresql_cluster import Cluster
from tests.processes import server_env

pytestmark = pytest.mark.asyncio


@pytest.fixture
def empty_database(
    postgres_cluster: Cluster, postgres_admin: ClusterAdmin, request: pytest.FixtureRequest
) -> Iterator[str]:
    """A database with no schema at all: what a platform team hands over."""
    name = f"empty_{request.node.name.lower()[:40]}"
    postgres_admin.execute(f"CREATE DATABASE {name}")
    yield postgres_cluster.url(name)
    postgres_admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


async def test_ok_servers_starting_together_on_an_empty_database_migrate_it_once(
    empty_database: str, postgres_cluster: Cluster, tmp_path: Path
) -> None:
    command = [sys.executable, "-m", "keyscope_server", "list-root-keys", "--db", empty_database, "--log-level", "info"]
    starting = [
        subprocess.Popen(
            command, cwd=tmp_path, env=server_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(4)
    ]
    results = [process.communicate(timeout=60) for process in starting]
    assert [process.returncode for process in starting] == [0] * 4, results
    logs = "".join(stderr for _, stderr in results)
    assert logs.count(f"store schema migrated to version {LATEST_VERSION}") == 1, logs
    database = empty_database.rsplit("/", 1)[1]
    applied = postgres_cluster.psql(
        "SELECT string_agg(version::text, ',' ORDER BY version) FROM keyscope_schema", database
    )
    assert applied == ",".join(str(n) for n in range(1, LATEST_VERSION + 1))


async def test_ok_a_second_start_applies_nothing(empty_database: str) -> None:
    for _ in range(2):
        store = await open_store(empty_database)
        assert await store.revision() == 0
        await store.close()


async def test_unavailable_a_database_of_a_newer_schema_is_refused(
    empty_database: str, postgres_cluster: Cluster
) -> None:
    store = await open_store(empty_database)
    await store.close()
    database = empty_database.rsplit("/", 1)[1]
    postgres_cluster.psql(f"INSERT INTO keyscope_schema VALUES ({LATEST_VERSION + 1}, 0)", database)
    with pytest.raises(StoreUnavailable, match=f"schema version {LATEST_VERSION + 1}, newer than this server"):
        await open_store(empty_database)
