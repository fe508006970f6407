"""The server under test as a process of its own: started, waited for, stopped, and measured from /proc.

`running_server` starts `python -m keyscope_server serve` (with `--workers N`, a parent and N worker processes) and
stops it with SIGTERM, which it must survive with exit code 0. CPU time and memory are read from /proc for the
server's whole process tree, so that they count its workers too. Given a `Production` (`scripts/bench --production`),
it starts the server as the README recommends for production, metrics and traces on, and scrapes its /metrics once
its load is done, before it stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import select
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

__all__ = [
    "SERVER_START_SECONDS",
    "BenchError",
    "Production",
    "ServerProcess",
    "kill",
    "reported_port",
    "running_server",
    "serve_until_sigterm",
    "tree_cpu_seconds",
    "tree_memory_mb",
    "tree_pss_mb",
    "wait_until_serving",
]

SERVING = health_pb2.HealthCheckResponse.SERVING
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
SERVER_START_SECONDS = 30
LOG_LINES = 20  # of a server's log, shown with a failure
SCRAPE_TIMEOUT_SECONDS = 10
# The README's production settings for traces ("Operations: traces"), the endpoint aside: 1% of the calls sampled
# (of those that come without a sampled parent, as the bench's do), exported over OTLP/gRPC. Plaintext, as the sink
# listens on loopback.
PRODUCTION_TRACING = {
    "OTEL_TRACES_EXPORTER": "otlp",
    "OTEL_EXPORTER_OTLP_INSECURE": "true",
    "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
    "OTEL_TRACES_SAMPLER_ARG": "0.01",
}


class BenchError(Exception):
    """A failure that ends the run with a message rather than a traceback."""


# -- /proc ---------------------------------------------------------------------------------------------------------


def process_tree(root: int) -> list[int]:
    """A process and its live descendants (the server's workers, once it has some)."""
    tree, frontier = [root], [root]
    while frontier:
        for children in Path(f"/proc/{frontier.pop()}/task").glob("*/children"):
            with contextlib.suppress(OSError):  # the thread or the process ended meanwhile
                found = [int(pid) for pid in children.read_text().split()]
                tree += found
                frontier += found
    return tree


def tree_cpu_seconds(root: int) -> float:
    """utime + stime of a process and of its live descendants."""
    ticks = 0
    for pid in process_tree(root):
        with contextlib.suppress(OSError):
            stat = Path(f"/proc/{pid}/stat").read_text()
            fields = stat[stat.rindex(")") + 2 :].split()  # from field 3 (state) on; the name may hold spaces
            ticks += int(fields[11]) + int(fields[12])
    return ticks / CLOCK_TICKS


def tree_memory_mb(root: int, field: str = "VmRSS") -> float:
    """A /proc/<pid>/status memory field (VmRSS: resident now; VmHWM: each process's own peak), summed over the
    process and its live descendants, in MB (10^6 bytes). Pages the processes share are counted in each."""
    kib = 0
    for pid in process_tree(root):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith(f"{field}:"):
                    kib += int(line.split()[1])
    return round(kib * 1024 / 1e6, 1)


def tree_pss_mb(root: int) -> float:
    """The proportional set size (Pss, /proc/<pid>/smaps_rollup) of a process and its live descendants, summed, in MB:
    each page counted once in all, shared ones split among the processes that map them. Beside tree_memory_mb's sum
    of VmRSS, which counts a page shared by N of them N times (libpython's, grpc's, and the pages a fork server's
    children share with it), it is what the tree takes of the machine's memory."""
    kib = 0
    for pid in process_tree(root):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    kib += int(line.split()[1])
    return round(kib * 1024 / 1e6, 1)


# -- the process ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ServerProcess:
    pid: int
    port: int


@dataclass
class Production:
    """Every Keyscope server as the README recommends running it in production: Prometheus metrics on
    (`--metrics-port`) and traces of 1% of the calls exported to `otlp_endpoint` (the bench's OTLP sink). `scrapes`
    gets one entry a server: its /metrics once its load was done, and the calls it counted."""

    otlp_endpoint: str
    scrapes: list[dict[str, Any]] = field(default_factory=list)

    def environment(self) -> dict[str, str]:
        return {
            **PRODUCTION_TRACING,
            "OTEL_EXPORTER_OTLP_ENDPOINT": self.otlp_endpoint,
        }

    def calls(self) -> int:
        """The unary calls the servers handled (grpc_server_handled_total), in the scrapes that succeeded."""
        return sum(int(scrape.get("calls", 0)) for scrape in self.scrapes)

    def failed(self) -> list[dict[str, Any]]:
        return [scrape for scrape in self.scrapes if not scrape["ok"]]


def scrape_metrics(name: str, port: int) -> dict[str, Any]:
    """One scrape of a server's /metrics: its size and the calls it counts, or why it failed."""
    url = f"http://127.0.0.1:{port}/metrics"
    try:
        with urllib.request.urlopen(url, timeout=SCRAPE_TIMEOUT_SECONDS) as response:
            body: bytes = response.read()
        calls = sum(
            sample.value
            for family in text_string_to_metric_families(body.decode())
            for sample in family.samples
            if sample.name == "grpc_server_handled_total"
        )
    except (OSError, ValueError) as exc:  # urllib's errors are OSErrors; the parser's, ValueErrors
        return {"server": name, "url": url, "ok": False, "error": f"{type(exc).__name__}: {exc}"}
    return {"server": name, "url": url, "ok": True, "bytes": len(body), "calls": int(calls)}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def serve_until_sigterm(server: grpc.aio.Server, grace: float | None) -> None:
    """How a child process of the bench (the bare server, the OTLP sink) serves: on 127.0.0.1, port 0, whose number
    it writes as its first line on stdout (for reported_port) once it serves; until SIGTERM, then stopping within
    `grace` seconds."""
    stopping = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stopping.set)  # before the parent knows the port
    port = server.add_insecure_port("127.0.0.1:0")
    if port == 0:
        raise OSError("cannot listen on 127.0.0.1")
    await server.start()
    print(port, flush=True)
    await stopping.wait()
    await server.stop(grace)


def reported_port(process: subprocess.Popen[bytes], log: Path, what: str) -> int:
    """The port a child process of the bench (the bare server, the OTLP sink) writes as its first line on stdout once
    it serves; the pipe stays open for what it writes later."""
    assert process.stdout is not None
    ready, _, _ = select.select([process.stdout], [], [], SERVER_START_SECONDS)
    line = process.stdout.readline() if ready else b""
    if not line.strip().isdigit():
        state = "did not serve" if process.poll() is None else f"exited with code {process.wait()}"
        raise BenchError(f"{what} {state} within {SERVER_START_SECONDS}s:\n{log.read_text()}")
    return int(line)


def wait_until_serving(process: subprocess.Popen[bytes], port: int, log: Path, workers: int) -> None:
    deadline = time.monotonic() + SERVER_START_SECONDS
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        while process.poll() is None:
            with contextlib.suppress(grpc.RpcError):
                # grpc_health-stubs declare HealthStub without its methods.
                if health.Check(health_pb2.HealthCheckRequest(), timeout=1).status == SERVING:  # type: ignore[attr-defined]
                    return
            if time.monotonic() > deadline:
                raise BenchError(f"the server did not serve within {SERVER_START_SECONDS}s:\n{log.read_text()}")
            time.sleep(0.1)
    hint = f" (this server does not support `serve --workers {workers}` yet)" if workers > 1 else ""
    raise BenchError(f"the server exited with code {process.returncode} before serving{hint}:\n{log.read_text()}")


def kill(process: subprocess.Popen[bytes]) -> None:
    """Kill a child process of the bench and reap it, reading what is left in its pipes, if it has any."""
    process.kill()
    process.communicate()


@contextlib.contextmanager
def running_server(db: str, workers: int, log: Path, production: Production | None = None) -> Iterator[ServerProcess]:
    """The server on `db` (a `--db` value), stopped with SIGTERM at the end, which it must survive with exit code 0;
    with `production`, configured as the README recommends for production, and its /metrics scraped before the stop."""
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "keyscope_server",
        "serve",
        "--db",
        db,
        "--port",
        str(port),
        "--log-level",
        "warning",
    ]
    if workers > 1:
        command += ["--workers", str(workers)]
    environment = None  # the bench's own
    metrics_port = None
    if production is not None:
        # A port chosen here, like the server's own, rather than `--metrics-port 0`: the server names the port it
        # took only in an INFO line, which `--log-level warning` (kept, so that no access line is written) drops.
        metrics_port = free_port()
        command += ["--metrics-port", str(metrics_port)]
        environment = {**os.environ, **production.environment()}
    with log.open("wb") as log_file:
        process = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT, env=environment)
    try:
        wait_until_serving(process, port, log, workers)
    except BaseException:
        kill(process)
        raise
    try:
        yield ServerProcess(process.pid, port)
    except BaseException as exc:
        kill(process)
        # A failure of the run (the load client's, say) with what the server said meanwhile, if it said anything.
        if isinstance(exc, BenchError) and (logged := log.read_text().splitlines()[-LOG_LINES:]):
            raise BenchError("\n".join([str(exc), f"the server on {db} logged, at the end:", *logged])) from exc
        raise
    if production is not None and metrics_port is not None:
        production.scrapes.append(scrape_metrics(log.stem, metrics_port))
    process.send_signal(signal.SIGTERM)
    if (code := process.wait(SERVER_START_SECONDS)) != 0:
        raise BenchError(f"the server exited with code {code} on SIGTERM:\n{log.read_text()}")
