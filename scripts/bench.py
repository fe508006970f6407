"""Throughput, latency and server CPU of Keyscope's hot paths, each as a ratio to the server's own health check;
the server's memory after verifying every key; and a soak of the mixed load.

What runs: the real server (`python -m server serve`) as a separate process on a temporary SQLite file that is
seeded beforehand through the store's interface (`Store.import_snapshot`: one API, a catalog of 50 permissions, a few
roles, a root key and `--keys` keys, in one transaction).
The load comes from a second process (multiprocessing, "spawn") that keeps `--concurrency` grpc.aio calls in flight
over 8 connections; key secrets reach it through the process pipe and are never written to disk.

What is measured, per scenario round of `--seconds`: requests/s, p50/p95/p99 latency of each call as the client saw
it, and the CPU time (utime + stime from /proc, the server process and its descendants) the server spent per request.
Rounds alternate with rounds of grpc.health.v1.Health/Check (health, scenario, health, scenario, ..., health), and
each scenario round is compared with the mean of the two health rounds beside it: `ratio_rps` (scenario rps / health
rps) and `ratio_p99` (scenario p99 / health p99). The client shares the machine's cores with the server, so absolute
figures move with the client's own cost and with the machine; the ratios move much less. Reported values are medians
over `--rounds`. Memory is the server's RSS (VmRSS of the server process and its workers, summed, in MB of 10^6
bytes): `rss_mb` of a scenario is the largest at the end of its rounds; the JSON's machine.run.server_rss_mb has it
once serving, at the end, and the sum of each process's own peak (VmHWM).

Scenarios:
  health           the baseline: Health/Check.
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
                   its latency is of one transaction at a time, not of 64 callers.
  memory           not in the default set, as it verifies every one of --keys keys: on a server of its own, after a
                   round of health checks, each key verified once; the server's RSS before and after that pass
                   ("rss_mb_before", "rss_mb_after"). `--keys 100000` gives the figure of the bounded verification
                   cache. No ratios: it is one pass, not rounds beside health rounds.

Soak (`--soak SECONDS`, instead of the scenarios): see scripts/bench_soak.py. The mixed load on the server with
`--workers` (2 unless given) for SECONDS, sampled every ~10 s; the exit code is 1 unless it had no error, no stale
answer and RSS growth under 10%. The JSON holds it under "soak".

Usage: scripts/bench [--quick] [--keys N] [--rounds N] [--seconds S] [--concurrency N] [--workers N]
                     [--scenarios a,b,...] [--json FILE]
       scripts/bench --soak SECONDS [--keys N] [--concurrency N] [--workers N] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import google.protobuf
import grpc
from bench_load import LoadClient, load_client
from bench_seed import Workload, seed
from bench_server import BenchError, running_server, tree_memory_mb
from bench_soak import render_soak, run_soak
from bench_sqlite_raw import SQLITE_VERSION, copy_database, measure_sqlite_raw

SCENARIOS = ("health", "verify-warm", "verify-cold", "set-permissions", "mixed", "sqlite-raw", "memory")
DEFAULT_SCENARIOS = tuple(name for name in SCENARIOS if name != "memory")


# -- the store's ceiling ---------------------------------------------------------------------------------


# The size of a key's state in an audit event, before and after, as SetPermissions writes it.
# -- the run ---------------------------------------------------------------------------------------------------


def with_ratios(result: dict[str, Any], before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    baseline_rps = (before["rps"] + after["rps"]) / 2
    baseline_p99 = (before["p99_ms"] + after["p99_ms"]) / 2
    return {**result, "ratio_rps": result["rps"] / baseline_rps, "ratio_p99": result["p99_ms"] / baseline_p99}


def combine(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians over the rounds; a reused key in any round, stale answers summed, and the largest RSS."""
    digits = {
        "rps": 1,
        "p50_ms": 3,
        "p95_ms": 3,
        "p99_ms": 3,
        "cpu_us_per_req": 1,
        "client_cpu_us_per_req": 1,
        "ratio_rps": 3,
        "ratio_p99": 3,
    }
    combined: dict[str, Any] = {
        name: round(statistics.median(r[name] for r in rounds), places)
        for name, places in digits.items()
        if name in rounds[0]
    }
    if "keys_reused" in rounds[0]:
        combined["keys_reused"] = any(r["keys_reused"] for r in rounds)
    if "stale" in rounds[0]:
        combined["stale"] = sum(r["stale"] for r in rounds)
    if "rss_mb" in rounds[0]:
        combined["rss_mb"] = max(r["rss_mb"] for r in rounds)
    return combined


def measure_all(
    client: LoadClient, raw: Callable[[float], dict[str, Any]], options: argparse.Namespace, workload: Workload
) -> dict[str, dict[str, Any]]:
    health = [client.run("health", options.seconds)]
    measured: dict[str, list[dict[str, Any]]] = {}
    # Each verify-cold round gets its share of the keys never verified: it ends early rather than verify one twice.
    cold_share = (len(workload.key_ids) - workload.warm) // options.rounds
    for scenario in (s for s in options.scenarios if s not in ("health", "memory")):
        for number in range(1, options.rounds + 1):
            if scenario == "sqlite-raw":
                result = raw(options.seconds)
            elif scenario == "verify-cold":
                result = client.run(scenario, options.seconds, cold_share)
            else:
                result = client.run(scenario, options.seconds)
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
        "sqlite": SQLITE_VERSION,
        "database_filesystem": mount[2],
        "note": f"the server and the load client share these {cores} cores: the client's own CPU competes with the"
        " server, which is why each scenario is also given as a ratio to the health check of the same run",
    }


def measure_memory(db: Path, workload: Workload, log: Path, options: argparse.Namespace) -> dict[str, Any]:
    with (
        running_server(db, options.workers, log) as server,
        load_client(server.port, server.pid, workload, options.concurrency) as client,
    ):
        result = client.run("memory", options.seconds)
    print(
        f"  memory: {result['keys_verified']} keys verified at {result['rps']:.0f} rps,"
        f" RSS {result['rss_mb_before']:.1f} -> {result['rss_mb_after']:.1f} MB",
        file=sys.stderr,
    )
    return {**combine([result]), **{name: result[name] for name in ("keys_verified", "rss_mb_before", "rss_mb_after")}}


def run(options: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="keyscope-bench-") as tmp:
        directory = Path(tmp)
        db = directory / "keyscope.db"
        started = time.perf_counter()
        workload = seed(str(db), options.keys)
        seed_seconds = time.perf_counter() - started
        print(f"seeded {options.keys} keys in {seed_seconds:.1f}s", file=sys.stderr)
        machine = machine_info(directory)
        machine["run"] = {
            "keys": options.keys,
            "concurrency": options.concurrency,
            "workers": options.workers,
            "seed_seconds": round(seed_seconds, 1),
        }
        if options.soak:
            soak = run_soak(db, workload, directory / "server.log", options.soak, options.workers, options.concurrency)
            return {"machine": machine, "soak": soak}
        machine["run"] |= {"rounds": options.rounds, "seconds": options.seconds}
        raw_db = directory / "raw.db"
        if "sqlite-raw" in options.scenarios:
            copy_database(db, raw_db)
        rng = random.Random(3)
        scenarios: dict[str, dict[str, Any]] = {}
        if any(name != "memory" for name in options.scenarios):
            with (
                running_server(db, options.workers, directory / "server.log") as server,
                load_client(server.port, server.pid, workload, options.concurrency) as client,
            ):
                serving = tree_memory_mb(server.pid)
                scenarios = measure_all(
                    client, lambda seconds: measure_sqlite_raw(raw_db, workload, seconds, rng), options, workload
                )
                machine["run"]["server_rss_mb"] = {
                    "serving": serving,
                    "end": tree_memory_mb(server.pid),
                    "peak": tree_memory_mb(server.pid, "VmHWM"),
                }
        if "memory" in options.scenarios:
            scenarios["memory"] = measure_memory(db, workload, directory / "memory-server.log", options)
    return {"machine": machine, "scenarios": scenarios}


# -- command line -------------------------------------------------------------------------------------------------


def render_machine(m: dict[str, Any]) -> str:
    run_ = m["run"]
    line = (
        f"machine: {m['cpu_model']}, {m['cores']} cores shared by server and client, {m['memory_gib']} GiB,"
        f" {m['os']}, Python {m['python']}, grpcio {m['grpcio']}, SQLite {m['sqlite']} on {m['database_filesystem']};"
        f" {run_['keys']} keys, {run_['concurrency']} callers"
    )
    if run_["workers"] > 1:
        line += f", {run_['workers']} server workers"
    if "rounds" in run_:
        line += f", {run_['rounds']} rounds of {run_['seconds']}s"
    if rss := run_.get("server_rss_mb"):
        line += f"; server RSS {rss['serving']} MB once serving, {rss['end']} MB at the end"
    return line


def render(report: dict[str, Any]) -> str:
    header = (
        f"{'scenario':<16}{'rps':>10}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'cpu µs/req':>12}{'client µs':>11}"
        f"{'×rps':>8}{'×p99':>8}{'rss MB':>9}"
    )
    lines = [header, "-" * len(header)]
    for name, s in report["scenarios"].items():
        client = f"{s['client_cpu_us_per_req']:>11.1f}" if "client_cpu_us_per_req" in s else f"{'':>11}"
        ratios = f"{s['ratio_rps']:>8.3f}{s['ratio_p99']:>8.3f}" if "ratio_rps" in s else f"{'':>16}"
        rss_mb = s.get("rss_mb", s.get("rss_mb_after"))  # the memory pass: RSS after it
        rss = f"{rss_mb:>9.1f}" if rss_mb is not None else f"{'':>9}"
        noted = ("keys_reused", "stale", "keys_verified", "rss_mb_before", "rss_mb_after")
        notes = "".join(f"  {key}={s[key]}" for key in noted if key in s)
        lines.append(
            f"{name:<16}{s['rps']:>10.1f}{s['p50_ms']:>9.2f}{s['p95_ms']:>9.2f}{s['p99_ms']:>9.2f}"
            f"{s['cpu_us_per_req']:>12.1f}{client}{ratios}{rss}{notes}".rstrip()
        )
    lines.append(render_machine(report["machine"]))
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
    parser.add_argument("--workers", type=positive(int), help="server processes (default 1; 2 with --soak)")
    parser.add_argument(
        "--scenarios",
        type=scenario_list,
        help=f"comma-separated subset of {','.join(SCENARIOS)} (default: all but memory)",
    )
    parser.add_argument(
        "--soak", type=positive(float), metavar="SECONDS", help="instead of the scenarios, the mixed load for SECONDS"
    )
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    options = parser.parse_args(argv)
    if options.soak:
        for_rounds = [f"--{name}" for name in ("scenarios", "rounds", "seconds") if getattr(options, name) is not None]
        if for_rounds:
            parser.error(f"--soak runs alone, without the scenario rounds that {', '.join(for_rounds)} would shape")
    quick = options.quick
    options.workers = options.workers or (2 if options.soak else 1)
    options.scenarios = options.scenarios or list(DEFAULT_SCENARIOS)
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
    print(render_soak(soak, options.keys, options.concurrency) if soak else render(report))
    if soak:
        print(render_machine(report["machine"]))
    print(f"wall time {time.perf_counter() - started:.0f}s", file=sys.stderr)
    if options.json:
        options.json.write_text(json.dumps(report, indent=2) + "\n")
    return 1 if soak and not soak["passed"] else 0


if __name__ == "__main__":
    sys.exit(main())
