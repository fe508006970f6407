"""`scripts/bench --soak SECONDS`: the mixed load (95% VerifyKey, 5% SetPermissions, every answer checked for
staleness) against the server with its workers for SECONDS without a pause, sampled every ~10 s.

The first interval is a warm-up: the server's RSS at its end is the baseline, and throughput drift and the
min/max are over the intervals after it. The soak passes with no error (any non-OK status, or a VerifyKey answer
other than CODE_VALID or CODE_INSUFFICIENT_PERMISSIONS), no stale answer, and RSS growth under 10%.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from bench_load import Servers, load_client
from bench_seed import Workload
from bench_server import BenchError, Production, running_server

__all__ = ["render_soak", "run_soak"]

SAMPLE_SECONDS = 10.0
MIN_INTERVALS = 6  # a warm-up and at least five to compare, however short the soak
RSS_GROWTH_LIMIT_PCT = 10.0
SERVER_LOG_LINES = 20


def run_soak(
    db: str,
    workload: Workload,
    log: Path,
    seconds: float,
    workers: int,
    concurrency: int,
    production: Production | None = None,
) -> dict[str, Any]:
    """The soak of the server on `db`, a `--db` value of either engine; with `production`, the server configured as
    the README recommends for production."""
    intervals = max(MIN_INTERVALS, math.ceil(seconds / SAMPLE_SECONDS))
    result: dict[str, Any] | None = None
    try:
        with (
            running_server(db, workers, log, production) as server,
            load_client(Servers([server.port], [server.pid]), workload, concurrency) as client,
        ):
            result = client.run("soak", seconds, intervals)
    except BenchError as exc:
        if result is None:
            raise
        # The server failed its stop (or was gone by then): a finding of the soak, reported with the rest of it.
        return verdict(result, seconds, workers, server_failure=str(exc))
    return verdict(result, seconds, workers)


def _change_pct(start: float, end: float) -> float | None:
    return (end - start) / start * 100 if start else None


def _signed(pct: float | None) -> str:
    return "n/a" if pct is None else f"{pct:+.1f}"


def verdict(result: dict[str, Any], seconds: float, workers: int, server_failure: str | None = None) -> dict[str, Any]:
    samples: list[dict[str, Any]] = result["samples"]
    warmup, measured = samples[0], samples[1:]
    rates = [s["rps"] for s in measured]
    rss_growth = _change_pct(warmup["rss_mb"], samples[-1]["rss_mb"])
    drift = _change_pct(rates[0], rates[-1])
    soak: dict[str, Any] = {
        "seconds": seconds,
        "workers": workers,
        "interval_seconds": round(seconds / len(samples), 2),
        "requests": sum(s["requests"] for s in samples),
        "errors": result["errors"],
        "errors_by_code": result["errors_by_code"],
        "first_errors": result["first_errors"],
        "stale": result["stale"],
        "rss_mb_start": warmup["rss_mb"],
        "rss_mb_end": samples[-1]["rss_mb"],
        "rss_growth_pct": None if rss_growth is None else round(rss_growth, 2),
        "rps_first": rates[0],
        "rps_last": rates[-1],
        "rps_drift_pct": None if drift is None else round(drift, 2),
        "rps_min": min(rates),
        "rps_max": max(rates),
    }
    failures = []
    if soak["errors"]:
        failures.append(f"{soak['errors']} error(s)")
    if soak["stale"]:
        failures.append(f"{soak['stale']} stale answer(s)")
    if server_failure:
        failures.append(server_failure.splitlines()[0].rstrip(":"))
    if rss_growth is None or rss_growth >= RSS_GROWTH_LIMIT_PCT:
        failures.append(f"RSS grew {_signed(rss_growth)}% (limit: under {RSS_GROWTH_LIMIT_PCT:g}%)")
    return {**soak, "server_failure": server_failure, "passed": not failures, "failures": failures, "samples": samples}


def render_soak(soak: dict[str, Any], keys: int, concurrency: int) -> str:
    rows = [
        ("requests", f"{soak['requests']}", ""),
        ("errors", f"{soak['errors']}", "0"),
        ("stale answers", f"{soak['stale']}", "0"),
        ("server RSS MB, after warm-up", f"{soak['rss_mb_start']:.1f}", ""),
        ("server RSS MB, at end", f"{soak['rss_mb_end']:.1f}", ""),
        ("RSS growth %", _signed(soak["rss_growth_pct"]), f"< {RSS_GROWTH_LIMIT_PCT:g}"),
        ("rps, first interval", f"{soak['rps_first']:.1f}", ""),
        ("rps, last interval", f"{soak['rps_last']:.1f}", ""),
        ("rps drift %", _signed(soak["rps_drift_pct"]), ""),
        ("rps min / max", f"{soak['rps_min']:.1f} / {soak['rps_max']:.1f}", ""),
    ]
    header = f"{'soak':<30}{'value':>16}{'target':>10}"
    lines = [
        f"soak of {soak['seconds']:g}s: mixed load, {soak['workers']} worker(s), {keys} keys, {concurrency} callers;"
        f" {len(soak['samples'])} intervals of {soak['interval_seconds']:g}s, the first a warm-up",
        header,
        "-" * len(header),
        *(f"{name:<30}{value:>16}{target:>10}".rstrip() for name, value, target in rows),
    ]
    if soak["errors"]:
        codes = ", ".join(f"{code} {count}" for code, count in soak["errors_by_code"].items())
        lines += [f"errors by code: {codes}; the first:", *(f"  {message}" for message in soak["first_errors"])]
    if soak["server_failure"]:
        lines += ["the server, at the end:", *soak["server_failure"].splitlines()[-SERVER_LOG_LINES:]]
    lines.append("soak: passed" if soak["passed"] else f"soak: FAILED ({'; '.join(soak['failures'])})")
    return "\n".join(lines)
