"""The rounds: each scenario round beside health rounds of the same servers (and, when bare is measured, rounds of
the bare server), the engines' rounds interleaved, and the medians of them all.

A scenario's round k runs on each engine in turn (sqlite, then postgresql), each followed by a health round of its
own servers and then a round of the bare server's Health/Check, before round k+1 runs on any: noise that lasts a
while hits both engines and both baselines. Each scenario round is compared with the mean of the two health rounds
beside it in its servers' own series (`ratio_rps`, `ratio_p99`), and with the mean of the two bare rounds beside it
(`ratio_rps_to_bare`, `ratio_p99_to_bare`, and `p50_over_bare_us`: its p50 minus theirs). Health's own rounds are
compared with the bare round that follows each, and bare's with the health round before each.
"""

from __future__ import annotations

import functools
import statistics
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bench_load import LoadClient
from bench_seed import Workload

__all__ = ["ONE_ENGINE", "EngineUnderTest", "Rounds", "combine", "compare_engines", "measure_all"]

# Scenarios that only one engine runs; the others run on every engine.
ONE_ENGINE = {
    "mixed-two-servers": "postgresql",
    "sqlite-raw": "sqlite",
    "postgres-raw": "postgresql",
    "postgres-raw-grouped": "postgresql",
}
RAW = ("sqlite-raw", "postgres-raw", "postgres-raw-grouped")
BASELINES = ("health", "bare")  # measured beside every scenario round, not as scenario rounds of their own
TWO_SERVERS_HEALTH = "health-two-servers"  # the health rounds beside mixed-two-servers, on the same two servers


def with_ratios(result: dict[str, Any], before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    baseline_rps = (before["rps"] + after["rps"]) / 2
    baseline_p99 = (before["p99_ms"] + after["p99_ms"]) / 2
    return {**result, "ratio_rps": result["rps"] / baseline_rps, "ratio_p99": result["p99_ms"] / baseline_p99}


def with_bare_ratios(result: dict[str, Any], before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    bare_rps = (before["rps"] + after["rps"]) / 2
    bare_p99 = (before["p99_ms"] + after["p99_ms"]) / 2
    bare_p50 = (before["p50_ms"] + after["p50_ms"]) / 2
    return {
        **result,
        "ratio_rps_to_bare": result["rps"] / bare_rps,
        "ratio_p99_to_bare": result["p99_ms"] / bare_p99,
        "p50_over_bare_us": (result["p50_ms"] - bare_p50) * 1000,
    }


def combine(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians over the rounds; a reused key in any round, stale answers summed, and the largest RSS."""
    digits = {
        "rps": 1,
        "p50_ms": 3,
        "p95_ms": 3,
        "p99_ms": 3,
        "cpu_us_per_req": 1,
        "db_cpu_us_per_req": 1,
        "client_cpu_us_per_req": 1,
        "ratio_rps": 3,
        "ratio_p99": 3,
        "ratio_rps_to_bare": 3,
        "ratio_p99_to_bare": 3,
        "p50_over_bare_us": 1,
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


@dataclass
class Rounds:
    """One set of servers' health rounds, the bare server's rounds taken beside them (when bare is measured), and
    the scenario rounds measured between them."""

    client: LoadClient
    bare_client: LoadClient | None = None  # the bare server's load client; None: bare is not measured
    health: list[dict[str, Any]] = field(default_factory=list)
    bare: list[dict[str, Any]] = field(default_factory=list)  # bare[i] taken right after health[i]
    measured: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def measure(self, scenario: str, result_of: Callable[[], dict[str, Any]], seconds: float) -> dict[str, Any]:
        """A round of the scenario (`result_of`), between this series' last baseline rounds and new ones."""
        if not self.health:
            self._baselines(seconds)
        result = result_of()
        self._baselines(seconds)
        measured = with_ratios(result, self.health[-2], self.health[-1])
        if self.bare:
            measured = with_bare_ratios(measured, self.bare[-2], self.bare[-1])
        self.measured.setdefault(scenario, []).append(measured)
        return result

    def _baselines(self, seconds: float) -> None:
        """A health round of these servers, then a round of the bare server's Health/Check."""
        self.health.append(self.client.run("health", seconds))
        if self.bare_client is not None:
            self.bare.append(self.bare_client.run("health", seconds))

    def pad_baselines(self, rounds: int, seconds: float) -> None:
        while len(self.health) < rounds:
            self._baselines(seconds)

    def baseline_results(self) -> dict[str, dict[str, Any]]:
        """The medians of health, each of its rounds over the bare round after it, and of bare, each of its rounds
        over the health round before it."""
        if not self.bare:
            return {"health": combine(self.health)}
        pairs = list(zip(self.health, self.bare, strict=True))
        return {
            "health": combine([with_bare_ratios(health, bare, bare) for health, bare in pairs]),
            "bare": combine([with_ratios(bare, health, health) for health, bare in pairs]),
        }


@dataclass
class EngineUnderTest:
    """An engine's servers as the rounds reach them: one server (`one`); for PostgreSQL, when mixed-two-servers is
    measured, two on its database (`two`); and the engine's raw scenarios (`raw(scenario, seconds)`)."""

    name: str
    label: str  # its progress lines' prefix: "" on SQLite alone, whose lines stay as they always were
    one: Rounds
    two: Rounds | None
    raw: Callable[[str, float], dict[str, Any]] | None  # None: none of its raw scenarios is measured

    def runs(self, scenario: str) -> bool:
        return ONE_ENGINE.get(scenario, self.name) == self.name

    def round(
        self, scenario: str, seconds: float, cold_share: int
    ) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any] | None]:
        """A round of the scenario, the health round after it, and the bare round after that (None: not measured)."""
        rounds, command, args = self.one, scenario, (seconds,)
        if scenario == "mixed-two-servers":
            assert self.two is not None, "mixed-two-servers runs on the engine's two servers"
            rounds, command = self.two, "mixed"
        elif scenario == "verify-cold":
            args = (seconds, cold_share)
        client, raw = rounds.client, self.raw
        if scenario in RAW:
            assert raw is not None, f"{self.name} was started without its raw scenarios"
            result_of = functools.partial(raw, scenario, seconds)
        else:
            result_of = functools.partial(client.run, command, *args)
        result = rounds.measure(scenario, result_of, seconds)
        return result, rounds.health[-1], rounds.bare[-1] if rounds.bare else None

    def results(self) -> dict[str, dict[str, Any]]:
        """The medians, in the order the scenarios ran after health and bare; the two servers' last, their health
        before their mixed load (their bare rounds serve their own ratios to bare, and are not reported apart)."""
        combined = self.one.baseline_results()
        combined |= {scenario: combine(rounds) for scenario, rounds in self.one.measured.items()}
        if self.two is not None and self.two.health:
            combined[TWO_SERVERS_HEALTH] = self.two.baseline_results()["health"]
            combined |= {scenario: combine(rounds) for scenario, rounds in self.two.measured.items()}
        return combined


def measure_all(
    engines: list[EngineUnderTest], scenarios: list[str], rounds: int, seconds: float, workload: Workload
) -> dict[str, dict[str, dict[str, Any]]]:
    """Every scenario's rounds on every engine that runs it, interleaved; the medians, by engine and scenario."""
    # Each verify-cold round gets its share of the keys never verified: it ends early rather than verify one twice.
    # (Each engine has its own copy of the keys, so each gets the whole share.)
    cold_share = (len(workload.key_ids) - workload.warm) // rounds
    for scenario in (s for s in scenarios if s not in (*BASELINES, "memory")):
        for number in range(1, rounds + 1):
            for engine in (e for e in engines if e.runs(scenario)):
                result, health, bare = engine.round(scenario, seconds, cold_share)
                versus_bare = f" | bare {bare['rps']:.0f} rps, p99 {bare['p99_ms']:.1f} ms" if bare else ""
                print(
                    f"  {engine.label}{scenario} {number}/{rounds}: {result['rps']:.0f} rps,"
                    f" p99 {result['p99_ms']:.1f} ms | health {health['rps']:.0f} rps, p99 {health['p99_ms']:.1f} ms"
                    f"{versus_bare}",
                    file=sys.stderr,
                )
    for engine in engines:
        engine.one.pad_baselines(rounds, seconds)
    return {engine.name: engine.results() for engine in engines}


def compare_engines(
    by_engine: dict[str, dict[str, dict[str, Any]]], subject: str = "postgresql", baseline: str = "sqlite"
) -> dict[str, dict[str, float]]:
    """For each scenario both engines ran: the subject's requests/s and p99 over the baseline's (of the medians).
    Not bare: the engines' bare rounds are of the one bare server, which has no engine."""
    first, second = by_engine.get(subject, {}), by_engine.get(baseline, {})
    return {
        scenario: {
            "ratio_rps": round(figures["rps"] / second[scenario]["rps"], 3),
            "ratio_p99": round(figures["p99_ms"] / second[scenario]["p99_ms"], 3),
        }
        for scenario, figures in first.items()
        if scenario in second and scenario != "bare"
    }
