"""The load client: a process of its own (multiprocessing, "spawn") that keeps `concurrency` grpc.aio calls in flight
over 8 connections and measures what it sees. The parent drives it through a pipe (`load_client`, `LoadClient.run`):
one command at a time, each a scenario round, the memory pass or a soak, answered with its figures.

Given several servers (on one PostgreSQL database), it spreads the connections over them, and each call takes a
connection at random: writes and VerifyKeys reach every server, and a VerifyKey is checked against the writes
acknowledged by any of them. Their CPU and memory are summed; the database's CPU, when it has processes of its own,
is given beside.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import random
import statistics
import sys
import time
import traceback
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

import grpc
from bench_seed import CATALOG, Workload
from bench_server import BenchError, tree_cpu_seconds, tree_memory_mb, tree_pss_mb
from grpc_health.v1 import health_pb2, health_pb2_grpc

from keyscope.v1 import keys_pb2, keys_pb2_grpc

__all__ = ["NAMES_PER_WRITE", "LoadClient", "Servers", "load_client", "summarize"]

QUERY = "documents.read AND (documents.write OR admin)"
NAMES_PER_WRITE = 5
WRITE_SHARE = 0.05
CONNECTIONS = 8
VERIFIED = (keys_pb2.VerifyKeyResponse.CODE_VALID, keys_pb2.VerifyKeyResponse.CODE_INSUFFICIENT_PERMISSIONS)
SOAK_CALL_TIMEOUT_SECONDS = 30.0  # a call that hangs this long is an error, not a stuck soak
FIRST_ERRORS = 5


class UnexpectedAnswer(BenchError):
    """A VerifyKey of a seeded, enabled key that did not answer CODE_VALID or CODE_INSUFFICIENT_PERMISSIONS."""


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


def interval_figures(latencies: list[float], seconds: float, cpu_seconds: float) -> dict[str, Any]:
    """A soak interval's figures; unlike `summarize`, also of an interval in which (almost) nothing completed."""
    cuts = statistics.quantiles(latencies, n=100, method="inclusive") if len(latencies) >= 2 else None
    return {
        "requests": len(latencies),
        "rps": round(len(latencies) / seconds, 1),
        "p50_ms": round(cuts[49] * 1000, 1) if cuts else None,
        "p99_ms": round(cuts[98] * 1000, 1) if cuts else None,
        "cpu_us_per_req": round(cpu_seconds / len(latencies) * 1e6, 1) if latencies else None,
    }


@dataclass
class Write:
    """A SetPermissions of the mixed load; `revision` is set once it is acknowledged."""

    permissions: frozenset[str]
    revision: int | None = None


@dataclass
class LoadGenerator:
    channels: list[grpc.aio.Channel]  # one connection each, so that several workers (or servers) share the load
    server_pids: list[int]
    database_pid: int | None  # PostgreSQL's postmaster; None for SQLite, whose work is the server's own
    workload: Workload
    concurrency: int
    rng: random.Random = field(default_factory=lambda: random.Random(2))
    next_warm: int = 0
    next_cold: int = 0
    keys_reused: bool = False
    stale: int = 0
    history: dict[int, list[Write]] = field(default_factory=dict)  # the mixed keys' writes, by key index
    verifying: dict[int, Counter[int]] = field(default_factory=dict)  # floors of the checked verifies in flight
    prepared: set[str] = field(default_factory=set)
    timeout: float | None = None  # of each call; None: wait as long as it takes
    errors: Counter[str] = field(default_factory=Counter)  # by status code; counted only in a soak
    first_errors: list[str] = field(default_factory=list)  # the first few distinct ones
    stubs: list[tuple[health_pb2_grpc.HealthStub, keys_pb2_grpc.KeyServiceStub]] = field(init=False)
    metadata: grpc.aio.Metadata = field(init=False)

    def __post_init__(self) -> None:
        # Made once, as a client keeps its stubs and credentials rather than building them for every call.
        # Raw stubs, not keyscope.AsyncClient: that client adds, on the Keyscope services only, an interceptor (call
        # details rebuilt and the call awaited in Python, every call) and gRPC's retry machinery (the service
        # config's retry policy, which buffers each retried method's messages), and it has no Health stub. VerifyKey
        # and SetPermissions would pay that client-side CPU, on the cores the server shares, and health and bare
        # would not: the ratios would measure the client as well as the server. Here every scenario, bare included,
        # goes through the same bare grpc.aio stubs, the same metadata and the same channels.
        self.stubs = [(health_pb2_grpc.HealthStub(c), keys_pb2_grpc.KeyServiceStub(c)) for c in self.channels]
        self.metadata = grpc.aio.Metadata(("authorization", f"Bearer {self.workload.root_secret}"))

    def _health(self) -> health_pb2_grpc.HealthStub:
        return self.rng.choice(self.stubs)[0]

    def _keys(self) -> keys_pb2_grpc.KeyServiceStub:
        return self.rng.choice(self.stubs)[1]

    async def measure(self, scenario: str, seconds: float, calls: int | None = None) -> dict[str, Any]:
        """A round of `seconds`, or of `calls` calls if those are made sooner (verify-cold: its share of the keys
        never verified, so that no round verifies a key twice)."""
        if scenario == "memory":
            return await self._memory(seconds)
        await self._prepare_once(scenario)
        self.stale = 0
        result = await self._drive(self._operations()[scenario], seconds, calls)
        if scenario == "verify-cold":
            result["keys_reused"] = self.keys_reused
        if scenario == "mixed":
            result["stale"] = self.stale
        result["rss_mb"] = self._server_rss()
        return result

    def _server_cpu(self) -> float:
        return sum(tree_cpu_seconds(pid) for pid in self.server_pids)

    def _server_rss(self) -> float:
        return round(sum(tree_memory_mb(pid) for pid in self.server_pids), 1)

    def _server_pss(self) -> float:
        return round(sum(tree_pss_mb(pid) for pid in self.server_pids), 1)

    def _database_cpu(self) -> float:
        return 0.0 if self.database_pid is None else tree_cpu_seconds(self.database_pid)

    def _operations(self) -> dict[str, Callable[[], Awaitable[Any]]]:
        return {
            "health": lambda: self._health().Check(health_pb2.HealthCheckRequest()),
            "verify-warm": lambda: self._verify(self._warm_key()),
            "verify-cold": lambda: self._verify(self._fresh_key()),
            "set-permissions": lambda: self._set_permissions(
                self.rng.randrange(len(self.workload.key_ids)), self.rng.sample(CATALOG, NAMES_PER_WRITE)
            ),
            "mixed": self._mixed,
        }

    async def _prepare_once(self, scenario: str) -> None:
        if scenario in self.prepared:
            return
        self.prepared.add(scenario)
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

    async def _drive(
        self, operation: Callable[[], Awaitable[Any]], seconds: float, calls: int | None = None
    ) -> dict[str, Any]:
        latencies: list[float] = []
        cpu_start, db_cpu_start, started = self._server_cpu(), self._database_cpu(), time.perf_counter()
        client_cpu_start = time.process_time()
        deadline = started + seconds
        left = -1 if calls is None else calls  # calls still to start; -1: no limit

        async def caller() -> None:
            nonlocal left
            while left != 0 and (start := time.perf_counter()) < deadline:
                left -= 1
                await operation()
                latencies.append(time.perf_counter() - start)

        await asyncio.gather(*(caller() for _ in range(self.concurrency)))
        elapsed, cpu = time.perf_counter() - started, self._server_cpu() - cpu_start
        client_cpu, db_cpu = time.process_time() - client_cpu_start, self._database_cpu() - db_cpu_start
        result = {**summarize(latencies, elapsed, cpu), "client_cpu_us_per_req": client_cpu / len(latencies) * 1e6}
        if self.database_pid is not None:
            result["db_cpu_us_per_req"] = db_cpu / len(latencies) * 1e6
        return result

    async def _memory(self, warmup_seconds: float) -> dict[str, Any]:
        """The server's RSS before and after every seeded key is verified once, the keys in order, after a round of
        health checks that lets gRPC take the memory its calls need; meant for a server that verified nothing yet."""
        await self._drive(self._operations()["health"], warmup_seconds)
        rss_before, pss_before = self._server_rss(), self._server_pss()
        latencies: list[float] = []

        async def timed_verify(index: int) -> None:
            start = time.perf_counter()
            await self._verify(index)
            latencies.append(time.perf_counter() - start)

        cpu_start, started = self._server_cpu(), time.perf_counter()
        await self._for_each(timed_verify, range(len(self.workload.key_ids)))
        elapsed, cpu = time.perf_counter() - started, self._server_cpu() - cpu_start
        return {
            **summarize(latencies, elapsed, cpu),
            "keys_verified": len(latencies),
            "rss_mb_before": rss_before,
            "rss_mb_after": self._server_rss(),
            "pss_mb_before": pss_before,
            "pss_mb_after": self._server_pss(),
        }

    async def soak(self, seconds: float, intervals: int) -> dict[str, Any]:
        """The mixed load for `seconds` without a pause, sampled at the end of each of `intervals` equal intervals
        (the last one once the calls in flight have ended). A non-OK status is counted, not raised."""
        await self._prepare_once("mixed")
        self.timeout, self.stale = SOAK_CALL_TIMEOUT_SECONDS, 0
        latencies: list[float] = []
        samples: list[dict[str, Any]] = []
        started = time.perf_counter()
        deadline = started + seconds
        previous = {"at": started, "cpu": self._server_cpu()}

        async def caller() -> None:
            while (start := time.perf_counter()) < deadline:
                try:
                    await self._mixed()
                except (grpc.aio.AioRpcError, UnexpectedAnswer) as exc:
                    self._count_error(exc)
                latencies.append(time.perf_counter() - start)

        def sample() -> None:
            now, cpu, calls = time.perf_counter(), self._server_cpu(), latencies[:]
            latencies.clear()
            samples.append(
                {
                    "interval": len(samples) + 1,
                    "end_s": round(now - started, 2),
                    **interval_figures(calls, now - previous["at"], cpu - previous["cpu"]),
                    "rss_mb": self._server_rss(),
                    "errors": self.errors.total(),
                    "stale": self.stale,
                }
            )
            previous.update(at=now, cpu=cpu)
            s = samples[-1]
            print(
                f"  soak {s['interval']}/{intervals} at {s['end_s']:.0f}s: {s['rps']:.0f} rps, p99 {s['p99_ms']} ms,"
                f" rss {s['rss_mb']:.1f} MB, errors {s['errors']}, stale {s['stale']}",
                file=sys.stderr,
            )

        callers = asyncio.gather(*(caller() for _ in range(self.concurrency)))
        for number in range(1, intervals):
            await asyncio.sleep(max(0.0, started + seconds * number / intervals - time.perf_counter()))
            sample()
        await callers
        sample()
        return {
            "samples": samples,
            "errors": self.errors.total(),
            "errors_by_code": dict(self.errors),
            "first_errors": self.first_errors,
            "stale": self.stale,
        }

    def _count_error(self, exc: grpc.aio.AioRpcError | UnexpectedAnswer) -> None:
        if isinstance(exc, grpc.aio.AioRpcError):
            code, message = exc.code().name, f"{exc.code().name}: {exc.details()}"
        else:
            code, message = "VERIFY_ANSWER", str(exc)
        self.errors[code] += 1
        if len(self.first_errors) < FIRST_ERRORS and message not in self.first_errors:
            self.first_errors.append(message)

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
        response = await self._keys().VerifyKey(request, metadata=self.metadata, timeout=self.timeout)
        if response.code not in VERIFIED:
            code = keys_pb2.VerifyKeyResponse.Code.Name(response.code)
            raise UnexpectedAnswer(f"VerifyKey of {self.workload.key_ids[index]} answered {code}")
        return response

    async def _set_permissions(self, index: int, names: Iterable[str]) -> int:
        request = keys_pb2.SetPermissionsRequest(key_id=self.workload.key_ids[index], permissions=sorted(names))
        response = await self._keys().SetPermissions(request, metadata=self.metadata, timeout=self.timeout)
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
        self._forget_superseded(index)

    async def _checked_verify(self, index: int) -> None:
        floor = max(w.revision for w in self.history[index] if w.revision is not None)
        floors = self.verifying.setdefault(index, Counter())
        floors[floor] += 1
        try:
            seen = frozenset((await self._verify(index)).permissions)
        finally:
            floors[floor] -= 1
            if not floors[floor]:
                del floors[floor]
        # Acceptable: the last write acknowledged before the call, or any later one (even one still in flight).
        roles = self.workload.role_permissions_of(index)
        writes = self.history[index]
        if not any(seen == w.permissions | roles for w in writes if w.revision is None or w.revision >= floor):
            self.stale += 1

    def _forget_superseded(self, index: int) -> None:
        """Drops the writes of a key that no verify, in flight or to come, can accept any more: those acknowledged
        below both the key's last acknowledged revision and the floor of each of its verifies in flight. Without
        this, a soak's history grows with every write, and with it the cost of each check."""
        writes = self.history[index]
        keep_from = min([max(w.revision for w in writes if w.revision is not None), *self.verifying.get(index, ())])
        self.history[index] = [w for w in writes if w.revision is None or w.revision >= keep_from]


@dataclass(frozen=True)
class Servers:
    """What the load is aimed at: the servers' ports and pids (one each, or several on one database), and the
    database's own process, if it has one."""

    ports: list[int]
    pids: list[int]
    database_pid: int | None = None


def client_process(conn: Connection, servers: Servers, workload: Workload, concurrency: int) -> None:
    asyncio.run(_serve_commands(conn, servers, workload, concurrency))


async def _serve_commands(conn: Connection, servers: Servers, workload: Workload, concurrency: int) -> None:
    # Several connections, as several client processes would open: with --workers the kernel spreads
    # connections (not calls) over the workers. A private subchannel pool keeps each channel's own connection.
    channels = [
        grpc.aio.insecure_channel(
            f"127.0.0.1:{servers.ports[number % len(servers.ports)]}", options=[("grpc.use_local_subchannel_pool", 1)]
        )
        for number in range(CONNECTIONS)
    ]
    try:
        load = LoadGenerator(channels, servers.pids, servers.database_pid, workload, concurrency)
        while (command := await asyncio.to_thread(conn.recv)) is not None:
            name, *args = command
            try:
                conn.send(("ok", await (load.soak(*args) if name == "soak" else load.measure(name, *args))))
            except Exception:  # reported to the parent, which stops the run
                conn.send(("error", traceback.format_exc()))
    finally:
        for channel in channels:
            await channel.close()


@dataclass
class LoadClient:
    """The parent's handle on the client process."""

    conn: Connection

    def run(self, scenario: str, *args: float) -> dict[str, Any]:
        """A round of `scenario` (args: its seconds, and for verify-cold the most calls to make), the "memory" pass
        (args: seconds of health checks before it), or a "soak" (args: seconds, intervals)."""
        self.conn.send((scenario, *args))
        try:
            status, payload = self.conn.recv()
        except EOFError:
            raise BenchError("the load client process died") from None
        if status == "error":
            raise BenchError(f"the load client failed during {scenario}:\n{payload}")
        return dict(payload)


@contextlib.contextmanager
def load_client(servers: Servers, workload: Workload, concurrency: int) -> Iterator[LoadClient]:
    context = multiprocessing.get_context("spawn")
    ours, theirs = context.Pipe()
    process = context.Process(target=client_process, args=(theirs, servers, workload, concurrency), name="bench-client")
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
