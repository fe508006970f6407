"""The PostgreSQL that `--db postgres` runs on: a cluster of its own, started as the tests start theirs
(tests/postgresql_cluster.py), with durable settings, and the bench's databases on it.

Unlike the tests' cluster, this one keeps PostgreSQL's durability (fsync and synchronous_commit on, full-page
writes): a commit waits for its WAL flush, as SQLite's `synchronous = FULL` waits for its fsync, so that the two
engines' writes are compared at the same promise.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from bench_server import BenchError

# The bench runs with scripts/ as sys.path[0]; the cluster it starts is the tests' own.
sys.path.append(str(Path(__file__).resolve().parent.parent))

from tests.postgresql_cluster import Cluster, PostgresMissing, running_cluster  # noqa: E402

__all__ = ["CLUSTER_SETTINGS", "DATABASE", "RAW_DATABASE", "PostgresDatabase", "running_postgres"]

CLUSTER_SETTINGS = {
    "fsync": "on",
    "synchronous_commit": "on",
    "full_page_writes": "on",
    "shared_buffers": "'256MB'",
    "max_connections": "200",
}
DATABASE = "keyscope_bench"
RAW_DATABASE = "keyscope_bench_raw"  # postgres-raw's copy, so that the servers' database is left as it was


@dataclass(frozen=True)
class PostgresDatabase:
    cluster: Cluster

    @property
    def url(self) -> str:
        """The `--db` value of the servers' database."""
        return self.cluster.url(DATABASE)

    @property
    def raw_url(self) -> str:
        return self.cluster.url(RAW_DATABASE)

    @property
    def pid(self) -> int:
        """The postmaster's: its process tree is every backend, whose CPU is the database's share of a request."""
        return int((self.cluster.data / "postmaster.pid").read_text().split()[0])

    @property
    def data(self) -> Path:
        return self.cluster.data

    def version(self) -> str:
        return self.cluster.psql("SHOW server_version")

    def settled(self) -> None:
        """After the seed: statistics for the planner, as autovacuum would gather them a little later anyway, so
        that no round's plans depend on when it does; then a checkpoint, so that none pays for the seed's."""
        self.cluster.psql("ANALYZE", DATABASE)
        self.cluster.psql("CHECKPOINT")

    def copy_for_raw(self) -> None:
        """The seeded database as postgres-raw's (no one may be connected to it meanwhile)."""
        self.cluster.psql(f"CREATE DATABASE {RAW_DATABASE} TEMPLATE {DATABASE}")


@contextlib.contextmanager
def running_postgres() -> Iterator[PostgresDatabase]:
    """A new cluster with an empty database for the servers, stopped and removed at the end."""
    try:
        with running_cluster(CLUSTER_SETTINGS) as cluster:
            cluster.psql(f"CREATE DATABASE {DATABASE}")
            yield PostgresDatabase(cluster)
    except PostgresMissing as exc:
        raise BenchError(str(exc)) from None
