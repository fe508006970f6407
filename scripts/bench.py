"""Throughput, latency and server CPU of Keyscope's hot paths, each as a ratio to the server's own health check.

What runs: the real server (`python -m server serve`) as a separate process on a temporary SQLite file that is
seeded beforehand (schema through `SqliteStore.open`, a root key through `SqliteStore.create_root_key`, then one
API, a catalog of 50 permissions, a few roles and `--keys` keys bulk-inserted with sqlite3 in one transaction).
The load comes from a second process (multiprocessing, "spawn") that keeps `--concurrency` grpc.aio calls in flight
over 8 connections; key secrets reach it through the process pipe and are never written to disk.

What is measured, per scenario round of `--seconds`: requests/s, p50/p95/p99 latency of each call as the client saw
it, and the CPU time (utime + stime from /proc, the server process and its descendants) the server spent per request.
Rounds alternate with rounds of grpc.health.v1.Health/Check (health, scenario, health, scenario, ..., health), and
each scenario round is compared with the mean of the two health rounds beside it: `ratio_rps` (scenario rps / health
rps) and `ratio_p99` (scenario p99 / health p99). The client shares the machine's cores with the server, so absolute
figures move with the client's own cost and with the machine; the ratios move much less. Reported values are medians
over `--rounds`.

Scenarios:
  health           the baseline: Health/Check.
  verify-warm      VerifyKey with a three-term query on a fixed set of keys, each verified once before measuring.
  verify-cold      VerifyKey on keys not verified before; "keys_reused": true when the run ran out of fresh keys.
  set-permissions  SetPermissions with 5 catalog names on random keys.
  mixed            95% VerifyKey, 5% SetPermissions on a small set of keys. A VerifyKey must see the direct
                   permissions of the last SetPermissions of that key acknowledged before it started (or of a later
                   one): writes are ordered by the revision they return. Answers that do not are counted as "stale".
  sqlite-raw       the store's ceiling: SetPermissions' transaction (delete the key's direct permissions, insert 5,
                   touch the key, bump the revision) with plain sqlite3 in one loop on a copy of the seeded database,
                   with the server's PRAGMAs; no gRPC. Its CPU is that of the loop's process; its latency is of one
                   transaction at a time, not of 64 callers.

Usage: scripts/bench [--quick] [--keys N] [--rounds N] [--seconds S] [--concurrency N] [--workers N]
                     [--scenarios a,b,...] [--json FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import platform
import random
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import google.protobuf
import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from keyscope.v1 import keys_pb2, keys_pb2_grpc
from server.credentials import ROOT_KEY_PREFIX, hash_secret, new_id, new_secret, secret_start
from server.store import SqliteStore

SCENARIOS = ("health", "verify-warm", "verify-cold", "set-permissions", "mixed", "sqlite-raw")
QUERY = "documents.read AND (documents.write OR admin)"
CATALOG = ("documents.read", "documents.write", "admin", *(f"perm.{i}" for i in range(47)))
ROLES = {
    "reader": ("documents.read", "perm.0"),
    "writer": ("documents.read", "documents.write", "perm.1"),
    "admin": ("admin", "perm.2", "perm.3"),
}
ROOT_PERMISSIONS = ("api.*.verify_key", "api.*.update_key", "api.*.read_key", "rbac.*.create_permission")
KEY_PREFIX = "bench"
WARM_KEYS = 1000
MIXED_KEYS = 100
NAMES_PER_WRITE = 5
WRITE_SHARE = 0.05
CONNECTIONS = 8
VERIFIED = (keys_pb2.VerifyKeyResponse.VALID, keys_pb2.VerifyKeyResponse.INSUFFICIENT_PERMISSIONS)
SERVING = health_pb2.HealthCheckResponse.SERVING
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
SERVER_START_SECONDS = 30
SEED_CACHE_KIB = 512 * 1024


class BenchError(Exception):
    """A failure that ends the run with a message rather than a traceback."""


# -- seeding ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Workload:
    """What the seeded database holds that the load needs; the secrets live only in memory."""

    root_secret: str
    key_ids: list[str]
    secrets: list[str]
    key_roles: list[int]  # index into role_permissions, -1 for a key without a role
    role_permissions: list[frozenset[str]]
    permission_ids: list[str]

    @property
    def warm(self) -> int:
        """Keys [0, warm) are the verify-warm set, keys [warm, ...) the verify-cold ones."""
        return min(WARM_KEYS, len(self.key_ids) // 4)

    @property
    def mixed(self) -> int:
        """Keys [0, mixed) are the mixed scenario's: few, so that a verify often follows a write of its key."""
        return min(MIXED_KEYS, self.warm)

    def role_permissions_of(self, index: int) -> frozenset[str]:
        role = self.key_roles[index]
        return self.role_permissions[role] if role >= 0 else frozenset()


async def _create_schema_and_root_key(path: Path) -> str:
    secret = new_secret(ROOT_KEY_PREFIX)
    store = await SqliteStore.open(path)
    try:
        await store.create_root_key("bench", hash_secret(secret), ROOT_PERMISSIONS)
    finally:
        await store.close()
    return secret


def seed(path: Path, keys: int) -> Workload:
    """A database with one API, its catalog, roles, and `keys` keys: a quarter with a role, each with 3 direct
    permissions (always documents.read), so that the query's answer varies from key to key."""
    root_secret = asyncio.run(_create_schema_and_root_key(path))
    rng = random.Random(1)
    permission_ids = {name: new_id("perm") for name in CATALOG}
    role_ids = [new_id("role") for _ in ROLES]
    secrets = [new_secret(KEY_PREFIX) for _ in range(keys)]
    key_ids = [new_id("key") for _ in range(keys)]
    key_roles = [(i // 4) % len(ROLES) if i % 4 == 0 else -1 for i in range(keys)]
    now = int(time.time() * 1000)
    api_id = new_id("api")
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as db:
        db.execute("PRAGMA foreign_keys = ON")
        db.execute(f"PRAGMA cache_size = -{SEED_CACHE_KIB}")  # the indexes take random inserts
        db.execute("BEGIN IMMEDIATE")
        db.execute("INSERT INTO apis (id, name, created_at, updated_at) VALUES (?, 'bench', ?, ?)", (api_id, now, now))
        db.executemany(
            "INSERT INTO permissions (id, api_id, name, created_at) VALUES (?, ?, ?, ?)",
            ((pid, api_id, name, now) for name, pid in permission_ids.items()),
        )
        db.executemany(
            "INSERT INTO roles (id, api_id, name, description, created_at, updated_at) VALUES (?, ?, ?, '', ?, ?)",
            ((rid, api_id, name, now, now) for rid, name in zip(role_ids, ROLES, strict=True)),
        )
        db.executemany(
            "INSERT INTO role_permissions (role_id, permission_id) VALUES (?, ?)",
            ((rid, permission_ids[p]) for rid, names in zip(role_ids, ROLES.values(), strict=True) for p in names),
        )
        db.executemany(
            "INSERT INTO keys (id, api_id, secret_hash, start, name, enabled, created_at, updated_at)"
            " VALUES (?, ?, ?, ?, ?, 1, ?, ?)",
            (
                (kid, api_id, hash_secret(s), secret_start(s, KEY_PREFIX), f"key {i}", now, now)
                for i, (kid, s) in enumerate(zip(key_ids, secrets, strict=True))
            ),
        )
        db.executemany(
            "INSERT INTO key_permissions (key_id, permission_id) VALUES (?, ?)",
            (
                (kid, permission_ids[name])
                for kid in key_ids
                for name in ("documents.read", *rng.sample(CATALOG[1:], 2))
            ),
        )
        db.executemany(
            "INSERT INTO key_roles (key_id, role_id) VALUES (?, ?)",
            ((kid, role_ids[role]) for kid, role in zip(key_ids, key_roles, strict=True) if role >= 0),
        )
        db.execute("UPDATE meta SET revision = revision + 1")
        db.execute("COMMIT")
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return Workload(
        root_secret,
        key_ids,
        secrets,
        key_roles,
        [frozenset(names) for names in ROLES.values()],
        list(permission_ids.values()),
    )


def copy_database(source: Path, target: Path) -> None:
    with contextlib.closing(sqlite3.connect(source)) as src, contextlib.closing(sqlite3.connect(target)) as dst:
        src.backup(dst)


# -- measuring ---------------------------------------------------------------------------------------


def summarize(latencies: list[float], seconds: float, cpu_seconds: float) -> dict[str, Any]:
    if len(latencies) < 2:
        raise BenchError(f"only {len(latencies)} call(s) completed in {seconds:.1f}s")
    cuts = statistics.quantiles(latencies, n=100, method="inclusive")
    return {
        "rps": len(latencies) / seconds,
        "p50_ms": cuts[49] * 1000,
        "p95_ms": cuts[94] * 1000,
        "p99_ms": cuts[98] * 1000,
        "cpu_us_per_req": cpu_seconds / len(latencies) * 1e6,
    }


def tree_cpu_seconds(root: int) -> float:
    """utime + stime of a process and of its live descendants (the server's workers, once it has some)."""
    parents: dict[int, int] = {}
    ticks: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # the process ended meanwhile
        fields = stat[stat.rindex(")") + 2 :].split()  # from field 3 (state) on; the name may hold spaces
        pid = int(entry.name)
        parents[pid] = int(fields[1])
        ticks[pid] = int(fields[11]) + int(fields[12])
    tree, frontier = {root}, [root]
    while frontier:
        parent = frontier.pop()
        children = [pid for pid, ppid in parents.items() if ppid == parent and pid not in tree]
        tree.update(children)
        frontier.extend(children)
    return sum(ticks.get(pid, 0) for pid in tree) / CLOCK_TICKS


def measure_sqlite_raw(path: Path, workload: Workload, seconds: float, rng: random.Random) -> dict[str, Any]:
    """SetPermissions' transaction, one at a time, in this process, for `seconds`."""
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as db:
        for pragma in ("journal_mode = WAL", "synchronous = FULL", "foreign_keys = ON", "busy_timeout = 5000"):
            db.execute(f"PRAGMA {pragma}")
        latencies: list[float] = []
        cpu_start, started = time.process_time(), time.perf_counter()
        deadline = started + seconds
        while (start := time.perf_counter()) < deadline:
            key_id = rng.choice(workload.key_ids)
            db.execute("BEGIN IMMEDIATE")
            db.execute("DELETE FROM key_permissions WHERE key_id = ?", (key_id,))
            db.executemany(
                "INSERT INTO key_permissions (key_id, permission_id) VALUES (?, ?)",
                ((key_id, pid) for pid in rng.sample(workload.permission_ids, NAMES_PER_WRITE)),
            )
            db.execute("UPDATE keys SET updated_at = ? WHERE id = ?", (int(time.time() * 1000), key_id))
            db.execute("UPDATE meta SET revision = revision + 1 RETURNING revision").fetchall()
            db.execute("COMMIT")
            latencies.append(time.perf_counter() - start)
        return summarize(latencies, time.perf_counter() - started, time.process_time() - cpu_start)


# -- the load client (runs in its own process) ----------------------------------------------------------


@dataclass
class Write:
    """A SetPermissions of the mixed scenario; `revision` is set once it is acknowledged."""

    permissions: frozenset[str]
    revision: int | None = None


@dataclass
class LoadGenerator:
    channels: list[grpc.aio.Channel]  # one connection each, so that several workers share the load
    server_pid: int
    workload: Workload
    concurrency: int
    rng: random.Random = field(default_factory=lambda: random.Random(2))
    next_warm: int = 0
    next_cold: int = 0
    keys_reused: bool = False
    stale: int = 0
    history: dict[int, list[Write]] = field(default_factory=dict)  # the mixed keys' writes, by key index
    prepared: set[str] = field(default_factory=set)

    def _channel(self) -> grpc.aio.Channel:
        return self.rng.choice(self.channels)

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.workload.root_secret}"),)

    async def measure(self, scenario: str, seconds: float) -> dict[str, Any]:
        if scenario not in self.prepared:
            await self._prepare(scenario)
            self.prepared.add(scenario)
        self.stale = 0
        result = await self._drive(self._operations()[scenario], seconds)
        if scenario == "verify-cold":
            result["keys_reused"] = self.keys_reused
        if scenario == "mixed":
            result["stale"] = self.stale
        return result

    def _operations(self) -> dict[str, Callable[[], Awaitable[Any]]]:
        return {
            "health": lambda: health_pb2_grpc.HealthStub(self._channel()).Check(health_pb2.HealthCheckRequest()),
            "verify-warm": lambda: self._verify(self._warm_key()),
            "verify-cold": lambda: self._verify(self._fresh_key()),
            "set-permissions": lambda: self._set_permissions(
                self.rng.randrange(len(self.workload.key_ids)), self.rng.sample(CATALOG, NAMES_PER_WRITE)
            ),
            "mixed": self._mixed,
        }

    async def _prepare(self, scenario: str) -> None:
        if scenario == "verify-warm":
            await self._for_each(self._verify, range(self.workload.warm))
        elif scenario == "mixed":
            await self._for_each(self._write, range(self.workload.mixed))
        elif scenario == "verify-cold":
            self.next_cold = self.workload.warm

    async def _for_each(self, operation: Callable[[int], Awaitable[Any]], indexes: Iterable[int]) -> None:
        pending = iter(indexes)

        async def caller() -> None:
            for index in pending:
                await operation(index)

        await asyncio.gather(*(caller() for _ in range(self.concurrency)))

    async def _drive(self, operation: Callable[[], Awaitable[Any]], seconds: float) -> dict[str, Any]:
        latencies: list[float] = []
        cpu_start, started = tree_cpu_seconds(self.server_pid), time.perf_counter()
        deadline = started + seconds

        async def caller() -> None:
            while (start := time.perf_counter()) < deadline:
                await operation()
                latencies.append(time.perf_counter() - start)

        await asyncio.gather(*(caller() for _ in range(self.concurrency)))
        elapsed, cpu = time.perf_counter() - started, tree_cpu_seconds(self.server_pid) - cpu_start
        return summarize(latencies, elapsed, cpu)

    def _warm_key(self) -> int:
        index = self.next_warm
        self.next_warm = (index + 1) % self.workload.warm
        return index

    def _fresh_key(self) -> int:
        if self.next_cold == len(self.workload.key_ids):
            self.next_cold, self.keys_reused = self.workload.warm, True
        index = self.next_cold
        self.next_cold += 1
        return index

    async def _verify(self, index: int) -> keys_pb2.VerifyKeyResponse:
        request = keys_pb2.VerifyKeyRequest(key=self.workload.secrets[index], permissions=QUERY)
        response = await keys_pb2_grpc.KeyServiceStub(self._channel()).VerifyKey(request, metadata=self.metadata)
        if response.code not in VERIFIED:
            code = keys_pb2.VerifyKeyResponse.Code.Name(response.code)
            raise BenchError(f"VerifyKey of {self.workload.key_ids[index]} answered {code}")
        return response

    async def _set_permissions(self, index: int, names: Iterable[str]) -> int:
        request = keys_pb2.SetPermissionsRequest(key_id=self.workload.key_ids[index], permissions=sorted(names))
        response = await keys_pb2_grpc.KeyServiceStub(self._channel()).SetPermissions(request, metadata=self.metadata)
        return int(response.revision)

    async def _mixed(self) -> None:
        index = self.rng.randrange(self.workload.mixed)
        if self.rng.random() < WRITE_SHARE:
            await self._write(index)
        else:
            await self._checked_verify(index)

    async def _write(self, index: int) -> None:
        write = Write(frozenset(self.rng.sample(CATALOG, NAMES_PER_WRITE)))
        self.history.setdefault(index, []).append(write)
        write.revision = await self._set_permissions(index, write.permissions)

    async def _checked_verify(self, index: int) -> None:
        writes = self.history[index]
        floor = max(w.revision for w in writes if w.revision is not None)
        seen = frozenset((await self._verify(index)).permissions)
        # Acceptable: the last write acknowledged before the call, or any later one (even one still in flight).
        roles = self.workload.role_permissions_of(index)
        if not any(seen == w.permissions | roles for w in writes if w.revision is None or w.revision >= floor):
            self.stale += 1


def client_process(conn: Connection, port: int, server_pid: int, workload: Workload, concurrency: int) -> None:
    asyncio.run(_serve_commands(conn, port, server_pid, workload, concurrency))


async def _serve_commands(conn: Connection, port: int, server_pid: int, workload: Workload, concurrency: int) -> None:
    # Several connections, as several client processes would open: with --workers the kernel spreads
    # connections (not calls) over the workers. A private subchannel pool keeps each channel's own connection.
    channels = [
        grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=[("grpc.use_local_subchannel_pool", 1)])
        for _ in range(CONNECTIONS)
    ]
    try:
        load = LoadGenerator(channels, server_pid, workload, concurrency)
        while (command := await asyncio.to_thread(conn.recv)) is not None:
            try:
                conn.send(("ok", await load.measure(*command)))
            except Exception:  # reported to the parent, which stops the run
                conn.send(("error", traceback.format_exc()))
    finally:
        for channel in channels:
            await channel.close()


@dataclass
class LoadClient:
    """The parent's handle on the client process."""

    conn: Connection

    def run(self, scenario: str, seconds: float) -> dict[str, Any]:
        self.conn.send((scenario, seconds))
        try:
            status, payload = self.conn.recv()
        except EOFError:
            raise BenchError("the load client process died") from None
        if status == "error":
            raise BenchError(f"the load client failed during {scenario}:\n{payload}")
        return dict(payload)


@contextlib.contextmanager
def load_client(port: int, server_pid: int, workload: Workload, concurrency: int) -> Iterator[LoadClient]:
    context = multiprocessing.get_context("spawn")
    ours, theirs = context.Pipe()
    process = context.Process(
        target=client_process, args=(theirs, port, server_pid, workload, concurrency), name="bench-client"
    )
    process.start()
    theirs.close()
    try:
        yield LoadClient(ours)
    finally:
        with contextlib.suppress(OSError):
            ours.send(None)
        process.join(10)
        if process.is_alive():
            process.terminate()
            process.join()


# -- the server process ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ServerProcess:
    pid: int
    port: int


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until_serving(process: subprocess.Popen[bytes], port: int, log: Path, workers: int) -> None:
    deadline = time.monotonic() + SERVER_START_SECONDS
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        while process.poll() is None:
            with contextlib.suppress(grpc.RpcError):
                if health.Check(health_pb2.HealthCheckRequest(), timeout=1).status == SERVING:
                    return
            if time.monotonic() > deadline:
                raise BenchError(f"the server did not serve within {SERVER_START_SECONDS}s:\n{log.read_text()}")
            time.sleep(0.1)
    hint = f" (this server does not support `serve --workers {workers}` yet)" if workers > 1 else ""
    raise BenchError(f"the server exited with code {process.returncode} before serving{hint}:\n{log.read_text()}")


@contextlib.contextmanager
def running_server(db: Path, workers: int, log: Path) -> Iterator[ServerProcess]:
    """The server on `db`, stopped with SIGTERM at the end, which it must survive with exit code 0."""
    port = free_port()
    command = [sys.executable, "-m", "server", "serve", "--db", str(db), "--port", str(port), "--log-level", "warning"]
    if workers > 1:
        command += ["--workers", str(workers)]
    with log.open("wb") as log_file:
        process = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT)
    try:
        wait_until_serving(process, port, log, workers)
        yield ServerProcess(process.pid, port)
    except BaseException:
        process.kill()
        process.wait()
        raise
    process.send_signal(signal.SIGTERM)
    if (code := process.wait(SERVER_START_SECONDS)) != 0:
        raise BenchError(f"the server exited with code {code} on SIGTERM:\n{log.read_text()}")


# -- the run ---------------------------------------------------------------------------------------------------


def with_ratios(result: dict[str, Any], before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    baseline_rps = (before["rps"] + after["rps"]) / 2
    baseline_p99 = (before["p99_ms"] + after["p99_ms"]) / 2
    return {**result, "ratio_rps": result["rps"] / baseline_rps, "ratio_p99": result["p99_ms"] / baseline_p99}


def combine(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians over the rounds; a reused key in any round, and stale answers summed."""
    digits = {"rps": 1, "p50_ms": 3, "p95_ms": 3, "p99_ms": 3, "cpu_us_per_req": 1, "ratio_rps": 3, "ratio_p99": 3}
    combined: dict[str, Any] = {
        name: round(statistics.median(r[name] for r in rounds), places)
        for name, places in digits.items()
        if name in rounds[0]
    }
    if "keys_reused" in rounds[0]:
        combined["keys_reused"] = any(r["keys_reused"] for r in rounds)
    if "stale" in rounds[0]:
        combined["stale"] = sum(r["stale"] for r in rounds)
    return combined


def measure_all(
    client: LoadClient, raw: Callable[[float], dict[str, Any]], options: argparse.Namespace
) -> dict[str, dict[str, Any]]:
    health = [client.run("health", options.seconds)]
    measured: dict[str, list[dict[str, Any]]] = {}
    for scenario in (s for s in options.scenarios if s != "health"):
        for number in range(1, options.rounds + 1):
            result = raw(options.seconds) if scenario == "sqlite-raw" else client.run(scenario, options.seconds)
            health.append(client.run("health", options.seconds))
            measured.setdefault(scenario, []).append(with_ratios(result, health[-2], health[-1]))
            print(
                f"  {scenario} {number}/{options.rounds}: {result['rps']:.0f} rps, p99 {result['p99_ms']:.1f} ms"
                f" | health {health[-1]['rps']:.0f} rps, p99 {health[-1]['p99_ms']:.1f} ms",
                file=sys.stderr,
            )
    while len(health) < options.rounds:
        health.append(client.run("health", options.seconds))
    return {"health": combine(health), **{name: combine(rounds) for name, rounds in measured.items()}}


def machine_info(directory: Path) -> dict[str, Any]:
    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")), "unknown")
    meminfo = Path("/proc/meminfo").read_text().split()
    mounts = [line.split() for line in Path("/proc/mounts").read_text().splitlines()]
    mount = max((m for m in mounts if directory.is_relative_to(m[1])), key=lambda m: len(m[1]))
    cores = os.cpu_count()
    return {
        "cpu_model": model,
        "cores": cores,
        "memory_gib": round(int(meminfo[meminfo.index("MemTotal:") + 1]) / 2**20, 1),
        "os": platform.platform(),
        "python": platform.python_version(),
        "grpcio": grpc.__version__,
        "protobuf": google.protobuf.__version__,
        "sqlite": sqlite3.sqlite_version,
        "database_filesystem": mount[2],
        "note": f"the server and the load client share these {cores} cores: the client's own CPU competes with the"
        " server, which is why each scenario is also given as a ratio to the health check of the same run",
    }


def run(options: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="keyscope-bench-") as tmp:
        directory = Path(tmp)
        db = directory / "keyscope.db"
        started = time.perf_counter()
        workload = seed(db, options.keys)
        seed_seconds = time.perf_counter() - started
        print(f"seeded {options.keys} keys in {seed_seconds:.1f}s", file=sys.stderr)
        raw_db = directory / "raw.db"
        if "sqlite-raw" in options.scenarios:
            copy_database(db, raw_db)
        rng = random.Random(3)
        machine = machine_info(directory)
        machine["run"] = {
            "keys": options.keys,
            "concurrency": options.concurrency,
            "rounds": options.rounds,
            "seconds": options.seconds,
            "workers": options.workers,
            "seed_seconds": round(seed_seconds, 1),
        }
        with (
            running_server(db, options.workers, directory / "server.log") as server,
            load_client(server.port, server.pid, workload, options.concurrency) as client,
        ):
            scenarios = measure_all(client, lambda seconds: measure_sqlite_raw(raw_db, workload, seconds, rng), options)
    return {"machine": machine, "scenarios": scenarios}


# -- command line -------------------------------------------------------------------------------------------------


def render(report: dict[str, Any]) -> str:
    m = report["machine"]
    header = (
        f"{'scenario':<16}{'rps':>10}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'cpu µs/req':>12}{'×rps':>8}{'×p99':>8}"
    )
    lines = [header, "-" * len(header)]
    for name, s in report["scenarios"].items():
        ratios = f"{s['ratio_rps']:>8.3f}{s['ratio_p99']:>8.3f}" if "ratio_rps" in s else f"{'':>16}"
        notes = "".join(f"  {key}={s[key]}" for key in ("keys_reused", "stale") if key in s)
        lines.append(
            f"{name:<16}{s['rps']:>10.1f}{s['p50_ms']:>9.2f}{s['p95_ms']:>9.2f}{s['p99_ms']:>9.2f}"
            f"{s['cpu_us_per_req']:>12.1f}{ratios}{notes}"
        )
    run_ = m["run"]
    lines.append(
        f"machine: {m['cpu_model']}, {m['cores']} cores shared by server and client, {m['memory_gib']} GiB,"
        f" {m['os']}, Python {m['python']}, grpcio {m['grpcio']}, SQLite {m['sqlite']} on {m['database_filesystem']};"
        f" {run_['keys']} keys, {run_['concurrency']} callers, {run_['rounds']} rounds of {run_['seconds']}s"
    )
    return "\n".join(lines)


def scenario_list(text: str) -> list[str]:
    chosen = {name.strip() for name in text.split(",") if name.strip()}
    if unknown := chosen - set(SCENARIOS):
        raise argparse.ArgumentTypeError(f"unknown scenario(s) {', '.join(sorted(unknown))}; choose from {SCENARIOS}")
    return [name for name in SCENARIOS if name in chosen]


def positive(kind: type[int] | type[float]) -> Callable[[str], Any]:
    def parse(text: str) -> int | float:
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be positive, not {text}")
        return value

    return parse


def parse_options(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="scripts/bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="a first look in under two minutes")
    parser.add_argument("--keys", type=positive(int), help="keys to seed (default 10000; 2000 with --quick)")
    parser.add_argument("--rounds", type=positive(int), help="rounds per scenario (default 3; 2 with --quick)")
    parser.add_argument("--seconds", type=positive(float), help="seconds per round (default 5; 2 with --quick)")
    parser.add_argument("--concurrency", type=positive(int), default=64, help="calls in flight (default 64)")
    parser.add_argument("--workers", type=positive(int), default=1, help="server processes (default 1)")
    parser.add_argument(
        "--scenarios", type=scenario_list, default=list(SCENARIOS), help="comma-separated subset (default: all)"
    )
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    options = parser.parse_args(argv)
    quick = options.quick
    options.keys = options.keys or (2000 if quick else 10_000)
    options.rounds = options.rounds or (2 if quick else 3)
    options.seconds = options.seconds or (2.0 if quick else 5.0)
    return options


def main(argv: list[str] | None = None) -> int:
    options = parse_options(argv)
    started = time.perf_counter()
    try:
        report = run(options)
    except BenchError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 1
    print(render(report))
    print(f"wall time {time.perf_counter() - started:.0f}s", file=sys.stderr)
    if options.json:
        options.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
