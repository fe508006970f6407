"""The server under test as a process of its own: started, waited for, stopped, and measured from /proc.

`running_server` starts `python -m keyscope_server serve` (with `--workers N`, a parent and N worker processes) and
stops it with SIGTERM, which it must survive with exit code 0. CPU time and memory are read from /proc for the
server's whole process tree, so that they count its workers too.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

__all__ = [
    "SERVER_START_SECONDS",
    "BenchError",
    "ServerProcess",
    "running_server",
    "tree_cpu_seconds",
    "tree_memory_mb",
    "wait_until_serving",
]

SERVING = health_pb2.HealthCheckResponse.SERVING
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
SERVER_START_SECONDS = 30
LOG_LINES = 20  # of a server's log, shown with a failure


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


# -- the process ---------------------------------------------------------------------------------------------------


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


def _kill(process: subprocess.Popen[bytes]) -> None:
    process.kill()
    process.wait()


@contextlib.contextmanager
def running_server(db: str, workers: int, log: Path) -> Iterator[ServerProcess]:
    """The server on `db` (a `--db` value), stopped with SIGTERM at the end, which it must survive with exit code 0."""
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
    with log.open("wb") as log_file:
        process = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT)
    try:
        wait_until_serving(process, port, log, workers)
    except BaseException:
        _kill(process)
        raise
    try:
        yield ServerProcess(process.pid, port)
    except BaseException as exc:
        _kill(process)
        # A failure of the run (the load client's, say) with what the server said meanwhile, if it said anything.
        if isinstance(exc, BenchError) and (logged := log.read_text().splitlines()[-LOG_LINES:]):
            raise BenchError("\n".join([str(exc), f"the server on {db} logged, at the end:", *logged])) from exc
        raise
    process.send_signal(signal.SIGTERM)
    if (code := process.wait(SERVER_START_SECONDS)) != 0:
        raise BenchError(f"the server exited with code {code} on SIGTERM:\n{log.read_text()}")
