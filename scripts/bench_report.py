"""The text the bench prints: one table of the scenarios (SQLite's alone, as it always was), or one of each scenario
on each engine with PostgreSQL's figures over SQLite's; a line on what the ratio columns are over; a line about
the machine; and with --production, a line above the table and the figures of the traces and the scrapes below."""

from __future__ import annotations

from typing import Any

__all__ = ["render", "render_engines", "render_machine", "render_production"]

NOTED = ("keys_reused", "stale", "keys_verified", "rss_mb_before", "rss_mb_after", "pss_mb_before", "pss_mb_after")
ENGINE_LABELS = {"sqlite": "sqlite", "postgresql": "postgres"}
RATIOS_LEGEND = (
    "×h: over this server's Health/Check in the rounds beside; ×b: over the bare grpc.aio server's (bare);"
    " p50-b µs: p50 minus bare's p50"
)
PRODUCTION_HEADER = (
    "--production: every Keyscope server with metrics on (--metrics-port) and 1% of calls traced to the bench's OTLP"
    " sink, as the README recommends for production; the bare server unchanged"
)


def render_machine(m: dict[str, Any]) -> str:
    run_ = m["run"]
    line = (
        f"machine: {m['cpu_model']}, {m['cores']} cores shared by server and client, {m['memory_gib']} GiB,"
        f" {m['os']}, Python {m['python']}, grpcio {m['grpcio']}, SQLite {m['sqlite']} on {m['database_filesystem']}"
    )
    if postgres := m.get("postgresql"):
        settings = ", ".join(f"{name} {value}" for name, value in postgres["settings"].items())
        line += f", PostgreSQL {postgres['version']} on {postgres['filesystem']} ({settings})"
    line += f"; {run_['keys']} keys, {run_['concurrency']} callers"
    if run_["workers"] > 1:
        line += f", {run_['workers']} server workers"
    if "rounds" in run_:
        line += f", {run_['rounds']} rounds of {run_['seconds']}s"
    if rss := run_.get("server_rss_mb"):
        line += f"; server RSS {rss['serving']} MB once serving, {rss['end']} MB at the end"
    if run_.get("production"):
        line += "; --production (metrics on, 1% of calls traced)"
    return line


def _production_header(report: dict[str, Any]) -> list[str]:
    return [PRODUCTION_HEADER] if report["machine"]["run"].get("production") else []


def render_production(p: dict[str, Any]) -> str:
    """The spans the OTLP sink received next to the calls the servers handled, and each server's scrape."""
    share = f" ({p['spans_per_call']:.2%})" if p["spans_per_call"] is not None else ""
    lines = [
        f"production traces: {p['spans_received']} spans received by the OTLP sink (in {p['exports_received']}"
        f" exports) for {p['calls']} calls the servers handled{share}; sampled at"
        f" {float(p['tracing']['OTEL_TRACES_SAMPLER_ARG']):.0%}"
    ]
    for scrape in p["scrapes"]:
        if scrape["ok"]:
            outcome = f"ok, {scrape['bytes']} bytes, {scrape['calls']} calls counted"
        else:
            outcome = f"FAILED: {scrape['error']}"
        lines.append(f"production metrics: {scrape['server']} /metrics scraped at the end: {outcome}")
    return "\n".join(lines)


def _notes(s: dict[str, Any]) -> str:
    return "".join(f"  {key}={s[key]}" for key in NOTED if key in s)


def _rss(s: dict[str, Any]) -> str:
    rss_mb = s.get("rss_mb", s.get("rss_mb_after"))  # the memory pass: RSS after it
    return f"{rss_mb:>9.1f}" if rss_mb is not None else f"{'':>9}"


def _ratios(s: dict[str, Any]) -> str:
    return f"{s['ratio_rps']:>8.3f}{s['ratio_p99']:>8.3f}" if "ratio_rps" in s else f"{'':>16}"


def _bare_ratios(s: dict[str, Any]) -> str:
    if "ratio_rps_to_bare" not in s:
        return f"{'':>26}"
    return f"{s['ratio_rps_to_bare']:>8.3f}{s['ratio_p99_to_bare']:>8.3f}{s['p50_over_bare_us']:>10.0f}"


def _optional(s: dict[str, Any], name: str, width: int) -> str:
    return f"{s[name]:>{width}.1f}" if name in s else f"{'':>{width}}"


def render(report: dict[str, Any]) -> str:
    header = (
        f"{'scenario':<16}{'rps':>10}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'cpu µs/req':>12}{'client µs':>11}"
        f"{'×h rps':>8}{'×h p99':>8}{'×b rps':>8}{'×b p99':>8}{'p50-b µs':>10}{'rss MB':>9}"
    )
    lines = [*_production_header(report), header, "-" * len(header)]
    for name, s in report["scenarios"].items():
        lines.append(
            f"{name:<16}{s['rps']:>10.1f}{s['p50_ms']:>9.2f}{s['p95_ms']:>9.2f}{s['p99_ms']:>9.2f}"
            f"{s['cpu_us_per_req']:>12.1f}{_optional(s, 'client_cpu_us_per_req', 11)}{_ratios(s)}{_bare_ratios(s)}"
            f"{_rss(s)}{_notes(s)}".rstrip()
        )
    lines.append(RATIOS_LEGEND)
    lines.append(render_machine(report["machine"]))
    return "\n".join(lines)


def render_engines(report: dict[str, Any]) -> str:
    """Each scenario on each engine; `db µs` is PostgreSQL's own CPU (its backends') per request, beside the
    server's; `pg/sq` is PostgreSQL's requests/s and p99 over SQLite's, for the scenarios both ran."""
    header = (
        f"{'scenario':<21}{'engine':<9}{'rps':>9}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'cpu µs/req':>12}"
        f"{'db µs':>8}{'client µs':>11}{'×h rps':>8}{'×h p99':>8}{'×b rps':>8}{'×b p99':>8}{'p50-b µs':>10}"
        f"{'rss MB':>9}{'pg/sq rps':>11}{'pg/sq p99':>11}"
    )
    lines = [*_production_header(report), header, "-" * len(header)]
    engines: dict[str, dict[str, Any]] = report["engines"]
    compared: dict[str, dict[str, float]] = report.get("postgresql_to_sqlite", {})
    order = list(dict.fromkeys(name for scenarios in engines.values() for name in scenarios["scenarios"]))
    for name in order:
        for engine, results in engines.items():
            if (s := results["scenarios"].get(name)) is None:
                continue
            pair = compared.get(name) if engine == "postgresql" else None
            versus = f"{pair['ratio_rps']:>11.3f}{pair['ratio_p99']:>11.3f}" if pair else f"{'':>22}"
            lines.append(
                f"{name:<21}{ENGINE_LABELS[engine]:<9}{s['rps']:>9.1f}{s['p50_ms']:>9.2f}{s['p95_ms']:>9.2f}"
                f"{s['p99_ms']:>9.2f}{s['cpu_us_per_req']:>12.1f}{_optional(s, 'db_cpu_us_per_req', 8)}"
                f"{_optional(s, 'client_cpu_us_per_req', 11)}{_ratios(s)}{_bare_ratios(s)}{_rss(s)}{versus}"
                f"{_notes(s)}".rstrip()
            )
    for engine, results in engines.items():
        if rss := results.get("server_rss_mb"):
            lines.append(
                f"{ENGINE_LABELS[engine]} server RSS: {rss['serving']} MB once serving, {rss['end']} MB at the end"
            )
    lines.append(RATIOS_LEGEND)
    lines.append(render_machine(report["machine"]))
    return "\n".join(lines)
