"""Throughput, latency and server CPU of Keyscope's hot paths, each as a ratio to the server's own health check and
to a bare grpc.aio server's; the server's memory after verifying every key; and a soak of the mixed load. On SQLite
(the default), on PostgreSQL (`--db postgres`), or on both in one run (`--db both`), with PostgreSQL's figures over
SQLite's.

What runs: the real server (`python -m keyscope_server serve`) as a separate process on a temporary SQLite file that is
seeded beforehand through the store's interface (`Store.import_snapshot`: one API, a catalog of 50 permissions, a few
roles, a root key and `--keys` keys, in one transaction).
The load comes from a second process (multiprocessing, "spawn") that keeps `--concurrency` grpc.aio calls in flight
over 8 connections; key secrets reach it through the process pipe and are never written to disk.
With `--db postgres`, the server's `--db` is a database on a PostgreSQL cluster the bench starts for the run
(scripts/bench_postgres.py: durable settings, fsync and synchronous_commit on), seeded with the same snapshot and then
analyzed. With `--db both`, each engine has its own server and load client, all running at once, on the same keys.
With bare (in the default set), a third process runs the bare server (scripts/bench_bare.py: a grpc.aio server on the
same grpcio serving only grpcio-health-checking's HealthServicer, no interceptor, no Keyscope code, on 127.0.0.1 port
0, which it reports on its stdout), driven by a load client of its own of the same code, connections and
`--concurrency`; one for the run, whatever the engines.

What is measured, per scenario round of `--seconds`: requests/s, p50/p95/p99 latency of each call as the client saw
it, and the CPU time (utime + stime from /proc, the server process and its descendants) the server spent per request;
on PostgreSQL also that of the database's processes (`db_cpu_us_per_req`: the postmaster and its backends).
Rounds alternate with rounds of grpc.health.v1.Health/Check (health, scenario, health, scenario, ..., health), and
each scenario round is compared with the mean of the two health rounds beside it: `ratio_rps` (scenario rps / health
rps) and `ratio_p99` (scenario p99 / health p99). With bare, each health round is followed by a round of the bare
server's Health/Check (health, bare, scenario, health, bare, ...), and each scenario round is also compared with the
mean of the two bare rounds beside it: `ratio_rps_to_bare`, `ratio_p99_to_bare`, and `p50_over_bare_us` (scenario p50
minus bare p50, in µs). Health's rounds get those against the bare round after each, and bare's get `ratio_rps` and
`ratio_p99` against the health round before each: how far Keyscope's own Health (its interceptor, its server) is
from gRPC's floor. `--concurrency 1` is the one-call-in-flight latency mode: every scenario, bare included, then has
one call in flight, and verify-warm's p50_over_bare_us is its p50 over the bare server's, unqueued. The client shares
the machine's cores with the server, so absolute figures move with the client's own cost and with the machine; the
ratios move much less. Reported values are medians
over `--rounds`. Memory is the server's RSS (VmRSS of the server process and its workers, summed, in MB of 10^6
bytes): `rss_mb` of a scenario is the largest at the end of its rounds; the JSON's machine.run.server_rss_mb has it
once serving, at the end, and the sum of each process's own peak (VmHWM).
With `--db both`, the engines' rounds are interleaved (scripts/bench_rounds.py): round k of a scenario on SQLite, then
on PostgreSQL, each followed by its own server's health round, so that the machine's noise hits both. The JSON then
holds each engine's figures under "engines" (with its server_rss_mb), and "postgresql_to_sqlite" has, for each
scenario both ran, PostgreSQL's median requests/s and p99 over SQLite's (the table's "pg/sq" columns).

Scenarios:
  health           the baseline: Health/Check.
  bare             the floor: Health/Check of the bare server (above), in rounds right after each health round. Its
                   CPU and RSS are the bare server's process's. It is one process even with --workers N.
  verify-warm      VerifyKey with a three-term query on a fixed set of keys, each verified once before measuring.
  verify-cold      VerifyKey on keys not verified before: each round takes its share of them and ends early, before
                   --seconds, once it has used its share ("keys_reused" stays false; true would mean a key ran out).
  set-permissions  SetPermissions with 5 catalog names on random keys.
  mixed            95% VerifyKey, 5% SetPermissions on a small set of keys. A VerifyKey must see the direct
                   permissions of the last SetPermissions of that key acknowledged before it started (or of a later
                   one): writes are ordered by the revision they return. Answers that do not are counted as "stale".
  sqlite-raw       the SQLite engine's ceiling (scripts/bench_sqlite_raw.py): SetPermissions' transaction (delete
                   the key's direct permissions, insert 5, touch the key's etag, bump the revision, log the change
                   and write its audit event) with the standard library's SQLite module in one loop on a copy of
                   the seeded database, with the server's PRAGMAs; no gRPC. Its CPU is that of the loop's process;
                   its latency is of one transaction at a time, not of 64 callers. SQLite only.
  postgres-raw     the PostgreSQL engine's ceiling (scripts/bench_postgres_raw.py): the same transaction in the
                   engine's SQL, behind its lock on the revision row, through asyncpg on a copy of the seeded
                   database; no gRPC. --concurrency callers on a pool, one transaction per write. PostgreSQL only.
  postgres-raw-grouped  the same, group-committed as the engine commits: the writes waiting at one moment share one
                   transaction, with no savepoint between them. PostgreSQL only.
  mixed-two-servers  the mixed load on two servers on the one PostgreSQL database, the load client's connections
                   spread over both and each call on one at random, so that writes and VerifyKeys reach both: a
                   VerifyKey must see the last write acknowledged before it started on EITHER server. Its health
                   rounds ("health-two-servers") are of the same two servers; CPU and RSS are theirs summed.
                   PostgreSQL only, and measured there whenever mixed is.
  memory           not in the default set, as it verifies every one of --keys keys: on a server of its own, after a
                   round of health checks, each key verified once; the server's RSS before and after that pass
                   ("rss_mb_before", "rss_mb_after"), and the same as proportional set sizes ("pss_mb_before",
                   "pss_mb_after": each page counted once in all, where the sum of RSS counts a page shared by N
                   processes N times). `--keys 100000` gives the figure of the bounded verification cache. No
                   ratios: it is one pass, not rounds beside health rounds.

Production (`--production`, with the scenarios or the soak): every Keyscope server of the run (each engine's, its
workers, the second server of mixed-two-servers, memory's, the soak's) runs as the README recommends for production:
Prometheus metrics on (`--metrics-port`, a free port), and OpenTelemetry traces of 1% of the calls
(OTEL_TRACES_EXPORTER=otlp, OTEL_TRACES_SAMPLER=parentbased_traceidratio, OTEL_TRACES_SAMPLER_ARG=0.01) exported to
an OTLP trace sink the bench starts in a process of its own (scripts/bench_otlp_sink.py: a TraceService on
127.0.0.1 port 0, in plaintext, that counts the spans and discards them). The bench scrapes each server's /metrics
once its load is done; at the end it reports the scrapes (size, success, the calls each server counted) and the
spans the sink received next to the calls (about 1% of them). The bare server is not changed: it is the floor. The
JSON says whether the run was one (machine.run.production) and holds the figures under "production"; the table
says so above and below it. The exit code is 1 if a scrape failed.

Soak (`--soak SECONDS`, instead of the scenarios): see scripts/bench_soak.py. The mixed load on the server with
`--workers` (2 unless given) for SECONDS, sampled every ~10 s; the exit code is 1 unless it had no error, no stale
answer and RSS growth under 10%. The JSON holds it under "soak". On one engine: --db sqlite or --db postgres.

Usage: scripts/bench [--quick] [--db sqlite|postgres|both] [--keys N] [--rounds N] [--seconds S] [--concurrency N]
                     [--workers N] [--scenarios a,b,...] [--production] [--json FILE]
       scripts/bench --soak SECONDS [--db sqlite|postgres] [--keys N] [--concurrency N] [--workers N] [--production]
                     [--json FILE]
       scripts/bench --concurrency 1 --scenarios bare,verify-warm    (verify-warm's p50 over bare's, one call at a time)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import random
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import google.protobuf
import grpc
from bench_bare import running_bare_server
from bench_load import LoadClient, Servers, load_client
from bench_otlp_sink import OtlpSink, running_otlp_sink
from bench_postgres import CLUSTER_SETTINGS, PostgresDatabase, running_postgres
from bench_postgres_raw import SHAPES, postgres_raw
from bench_report import ENGINE_LABELS, render, render_engines, render_machine, render_production
from bench_rounds import ONE_ENGINE, EngineUnderTest, Rounds, combine, compare_engines, measure_all
from bench_seed import Workload, seed
from bench_server import BenchError, Production, ServerProcess, running_server, tree_memory_mb
from bench_soak import render_soak, run_soak
from bench_sqlite_raw import SQLITE_VERSION, copy_database, measure_sqlite_raw

SCENARIOS = (
    "health",
    "bare",
    "verify-warm",
    "verify-cold",
    "set-permissions",
    "mixed",
    "sqlite-raw",
    "postgres-raw",
    "postgres-raw-grouped",
    "mixed-two-servers",
    "memory",
)
DEFAULT_SCENARIOS = tuple(name for name in SCENARIOS if name != "memory")
DATABASES = {"sqlite": ("sqlite",), "postgres": ("postgresql",), "both": ("sqlite", "postgresql")}  # --db: engines


# -- the machine ---------------------------------------------------------------------------------------------------


def filesystem_of(path: Path) -> str:
    mounts = [line.split() for line in Path("/proc/mounts").read_text().splitlines()]
    return max((m for m in mounts if path.is_relative_to(m[1])), key=lambda m: len(m[1]))[2]


def machine_info(directory: Path, postgres: PostgresDatabase | None) -> dict[str, Any]:
    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")), "unknown")
    meminfo = Path("/proc/meminfo").read_text().split()
    cores = os.cpu_count()
    machine: dict[str, Any] = {
        "cpu_model": model,
        "cores": cores,
        "memory_gib": round(int(meminfo[meminfo.index("MemTotal:") + 1]) / 2**20, 1),
        "os": platform.platform(),
        "python": platform.python_version(),
        "grpcio": grpc.__version__,
        "protobuf": google.protobuf.__version__,
        "sqlite": SQLITE_VERSION,
        "database_filesystem": filesystem_of(directory),
        "note": f"the server and the load client share these {cores} cores: the client's own CPU competes with the"
        " server, which is why each scenario is also given as a ratio to the health check of the same run (and, with"
        " bare, to a bare grpc.aio server's health check in the same rounds)",
    }
    if postgres is not None:
        machine["postgresql"] = {
            "version": postgres.version(),
            "settings": {name: value.strip("'") for name, value in CLUSTER_SETTINGS.items()},
            "filesystem": filesystem_of(postgres.data),
        }
    return machine


# -- the engines under test ----------------------------------------------------------------------------------------


def progress_label(engine: str, options: argparse.Namespace) -> str:
    """The prefix of an engine's progress lines: none on SQLite alone, whose lines stay as they always were."""
    return "" if options.db == "sqlite" else f"{ENGINE_LABELS[engine]} "


@contextlib.contextmanager
def engine_under_test(
    name: str,
    db: str,
    postgres: PostgresDatabase | None,
    directory: Path,
    workload: Workload,
    options: argparse.Namespace,
    bare: LoadClient | None,
    production: Production | None,
) -> Iterator[tuple[EngineUnderTest, ServerProcess]]:
    """The engine's server and its load client; on PostgreSQL (`postgres`, which holds `db`), the second server of
    mixed-two-servers and the raw scenarios' pool when those are measured. `bare`, the bare server's load client
    (None: bare is not measured), takes its rounds beside the engine's health rounds. `production`: the servers'
    production settings (None: the defaults). Yields the engine and its first server."""
    database_pid = postgres.pid if postgres is not None else None
    rng = random.Random(3)

    def sqlite_raw(_: str, seconds: float) -> dict[str, Any]:
        return measure_sqlite_raw(directory / "raw.db", workload, seconds, rng)

    with contextlib.ExitStack() as stack:
        server = stack.enter_context(running_server(db, options.workers, directory / f"{name}-server.log", production))
        alone = Servers([server.port], [server.pid], database_pid)
        one = Rounds(stack.enter_context(load_client(alone, workload, options.concurrency)), bare)
        two = None
        raw: Callable[[str, float], dict[str, Any]] | None = sqlite_raw if postgres is None else None
        if postgres is not None and "mixed-two-servers" in options.scenarios:
            other = stack.enter_context(
                running_server(db, options.workers, directory / f"{name}-server-2.log", production)
            )
            pair = Servers([server.port, other.port], [server.pid, other.pid], database_pid)
            two = Rounds(stack.enter_context(load_client(pair, workload, options.concurrency)), bare)
        if postgres is not None and any(scenario in SHAPES for scenario in options.scenarios):
            raw = stack.enter_context(
                postgres_raw(postgres.raw_url, workload, options.concurrency, postgres.pid, rng)
            ).measure
        yield EngineUnderTest(name, progress_label(name, options), one, two, raw), server


def measure_engines(
    dbs: dict[str, str],
    postgres: PostgresDatabase | None,
    directory: Path,
    workload: Workload,
    options: argparse.Namespace,
    production: Production | None,
) -> dict[str, dict[str, Any]]:
    """Every engine's servers running at once (and the bare server, when bare is measured), their rounds
    interleaved; by engine, the scenarios' medians and the server's RSS once serving, at the end, and the sum of each
    process's own peak (VmHWM)."""
    with contextlib.ExitStack() as stack:
        bare = None
        if "bare" in options.scenarios:
            bare_server = stack.enter_context(running_bare_server(directory / "bare-server.log"))
            bare = stack.enter_context(
                load_client(Servers([bare_server.port], [bare_server.pid]), workload, options.concurrency)
            )
        started = [
            stack.enter_context(
                engine_under_test(
                    name, db, postgres if name == "postgresql" else None, directory, workload, options, bare, production
                )
            )
            for name, db in dbs.items()
        ]
        serving = {engine.name: tree_memory_mb(server.pid) for engine, server in started}
        scenarios = measure_all(
            [engine for engine, _ in started], options.scenarios, options.rounds, options.seconds, workload
        )
        return {
            engine.name: {
                "server_rss_mb": {
                    "serving": serving[engine.name],
                    "end": tree_memory_mb(server.pid),
                    "peak": tree_memory_mb(server.pid, "VmHWM"),
                },
                "scenarios": scenarios[engine.name],
            }
            for engine, server in started
        }


def measure_memory(
    name: str,
    db: str,
    workload: Workload,
    directory: Path,
    options: argparse.Namespace,
    production: Production | None,
) -> dict[str, Any]:
    with (
        running_server(db, options.workers, directory / f"{name}-memory-server.log", production) as server,
        load_client(Servers([server.port], [server.pid]), workload, options.concurrency) as client,
    ):
        result = client.run("memory", options.seconds)
    print(
        f"  {progress_label(name, options)}memory: {result['keys_verified']} keys verified at {result['rps']:.0f} rps,"
        f" RSS {result['rss_mb_before']:.1f} -> {result['rss_mb_after']:.1f} MB,"
        f" PSS {result['pss_mb_before']:.1f} -> {result['pss_mb_after']:.1f} MB",
        file=sys.stderr,
    )
    noted = ("keys_verified", "rss_mb_before", "rss_mb_after", "pss_mb_before", "pss_mb_after")
    return {**combine([result]), **{key: result[key] for key in noted}}


# -- the run ---------------------------------------------------------------------------------------------------


def report_of(machine: dict[str, Any], by_engine: dict[str, dict[str, Any]], db: str) -> dict[str, Any]:
    """SQLite's alone in the shape it always had; otherwise by engine, and PostgreSQL's figures over SQLite's."""
    if db == "sqlite":
        sqlite = by_engine.get("sqlite", {})
        if "server_rss_mb" in sqlite:
            machine["run"]["server_rss_mb"] = sqlite["server_rss_mb"]
        return {"machine": machine, "scenarios": sqlite.get("scenarios", {})}
    report: dict[str, Any] = {"machine": machine, "engines": by_engine}
    if len(by_engine) > 1:
        report["postgresql_to_sqlite"] = compare_engines({name: e["scenarios"] for name, e in by_engine.items()})
    return report


def production_report(production: Production, sink: OtlpSink) -> dict[str, Any]:
    """What --production set, the scrapes of /metrics, and the spans the sink received against the calls the servers
    handled (every unary call, readiness checks and warm-ups included, as each is a span's chance of being sampled)."""
    calls = production.calls()
    return {
        "metrics": "--metrics-port, a free port for each server",
        "tracing": production.environment(),
        "scrapes": production.scrapes,
        "scrapes_ok": not production.failed(),
        "calls": calls,
        "spans_received": sink.spans,
        "exports_received": sink.exports,
        "spans_per_call": round(sink.spans / calls, 5) if sink.spans is not None and calls else None,
    }


def run(options: argparse.Namespace) -> dict[str, Any]:
    engines = DATABASES[options.db]
    sink: OtlpSink | None = None
    production: Production | None = None
    with tempfile.TemporaryDirectory(prefix="keyscope-bench-") as tmp, contextlib.ExitStack() as stack:
        directory = Path(tmp)
        if options.production:
            # Entered first, so stopped last: a server exports the spans it still holds when it stops.
            sink = stack.enter_context(running_otlp_sink(directory / "otlp-sink.log"))
            production = Production(sink.endpoint)
        postgres = stack.enter_context(running_postgres()) if "postgresql" in engines else None
        dbs = {"sqlite": str(directory / "keyscope.db")} if "sqlite" in engines else {}
        if postgres is not None:
            dbs["postgresql"] = postgres.url
        started = time.perf_counter()
        workload = seed(list(dbs.values()), options.keys)
        if postgres is not None:
            postgres.settled()
        seed_seconds = time.perf_counter() - started
        print(f"seeded {options.keys} keys in {seed_seconds:.1f}s", file=sys.stderr)
        machine = machine_info(directory, postgres)
        machine["run"] = {
            "keys": options.keys,
            "concurrency": options.concurrency,
            "workers": options.workers,
            "seed_seconds": round(seed_seconds, 1),
        }
        if options.db != "sqlite":
            machine["run"]["db"] = options.db
        if options.soak:
            (db,) = dbs.values()
            soak = run_soak(
                db, workload, directory / "server.log", options.soak, options.workers, options.concurrency, production
            )
            machine["run"]["production"] = options.production
            report = {"machine": machine, "soak": soak}
        else:
            machine["run"] |= {"rounds": options.rounds, "seconds": options.seconds, "production": options.production}
            by_engine = measure_scenarios(dbs, postgres, directory, workload, options, production)
            report = report_of(machine, by_engine, options.db)
    if production is not None and sink is not None:  # the sink has stopped: its counts are in
        report["production"] = production_report(production, sink)
    return report


def measure_scenarios(
    dbs: dict[str, str],
    postgres: PostgresDatabase | None,
    directory: Path,
    workload: Workload,
    options: argparse.Namespace,
    production: Production | None,
) -> dict[str, dict[str, Any]]:
    """The scenarios' rounds on every engine, then memory's pass on each; by engine."""
    # The raw scenarios' copies, made before any server connects (PostgreSQL copies only an unused database).
    if "sqlite-raw" in options.scenarios:
        copy_database(Path(dbs["sqlite"]), directory / "raw.db")
    if postgres is not None and any(scenario in SHAPES for scenario in options.scenarios):
        postgres.copy_for_raw()
    by_engine: dict[str, dict[str, Any]] = {}
    if any(name != "memory" for name in options.scenarios):
        by_engine = measure_engines(dbs, postgres, directory, workload, options, production)
    if "memory" in options.scenarios:
        for name, db in dbs.items():
            memory = measure_memory(name, db, workload, directory, options, production)
            by_engine.setdefault(name, {"scenarios": {}})["scenarios"]["memory"] = memory
    return by_engine


# -- command line -------------------------------------------------------------------------------------------------


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
    parser.add_argument("--workers", type=positive(int), help="server processes (default 1; 2 with --soak)")
    parser.add_argument(
        "--scenarios",
        type=scenario_list,
        help=f"comma-separated subset of {','.join(SCENARIOS)} (default: all but memory that --db's engines run)",
    )
    parser.add_argument(
        "--soak", type=positive(float), metavar="SECONDS", help="instead of the scenarios, the mixed load for SECONDS"
    )
    parser.add_argument(
        "--db",
        choices=DATABASES,
        default="sqlite",
        help="the engine: sqlite (the default), postgres (on a PostgreSQL cluster the bench starts), or both, their"
        " rounds interleaved",
    )
    parser.add_argument(
        "--production",
        action="store_true",
        help="every Keyscope server with metrics on and 1%% of calls traced to an OTLP sink of the bench's, as the"
        " README recommends for production; their /metrics scraped at the end (the bare server unchanged)",
    )
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    options = parser.parse_args(argv)
    engines = DATABASES[options.db]
    if options.soak:
        for_rounds = [f"--{name}" for name in ("scenarios", "rounds", "seconds") if getattr(options, name) is not None]
        if for_rounds:
            parser.error(f"--soak runs alone, without the scenario rounds that {', '.join(for_rounds)} would shape")
        if len(engines) > 1:
            parser.error("--soak runs on one engine: --db sqlite or --db postgres")
    if options.scenarios:
        if elsewhere := [name for name in options.scenarios if ONE_ENGINE.get(name, engines[0]) not in engines]:
            on = {ONE_ENGINE[name] for name in elsewhere}
            parser.error(
                f"{', '.join(elsewhere)}: only on {' and '.join(sorted(on))}, which --db {options.db} leaves out"
            )
        if "mixed" in options.scenarios and "postgresql" in engines:
            # On PostgreSQL the mixed load is also measured on two servers, which only that engine can have.
            options.scenarios = scenario_list(",".join([*options.scenarios, "mixed-two-servers"]))
    else:
        options.scenarios = [name for name in DEFAULT_SCENARIOS if ONE_ENGINE.get(name, engines[0]) in engines]
    quick = options.quick
    options.workers = options.workers or (2 if options.soak else 1)
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
    soak = report.get("soak")
    if soak:
        print(render_soak(soak, options.keys, options.concurrency))
    else:
        print(render(report) if "scenarios" in report else render_engines(report))
    if soak:
        print(render_machine(report["machine"]))
    if production := report.get("production"):
        print(render_production(production))
    print(f"wall time {time.perf_counter() - started:.0f}s", file=sys.stderr)
    if options.json:
        options.json.write_text(json.dumps(report, indent=2) + "\n")
    return 1 if (soak and not soak["passed"]) or (production and not production["scrapes_ok"]) else 0


if __name__ == "__main__":
    sys.exit(main())
