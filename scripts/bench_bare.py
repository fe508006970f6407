"""The bare server: the floor the bench compares Keyscope with, as a process of its own.

A `grpc.aio` server on the bench's own grpcio serving only grpcio-health-checking's asyncio HealthServicer (the one
Keyscope's own Health subclasses), with no interceptor, no server options and no Keyscope code, on one process and
one event loop. Run as a program (`python scripts/bench_bare.py`), it listens on 127.0.0.1 port 0, writes the port
it was given as one line on stdout once it serves, and stops on SIGTERM with exit code 0. `running_bare_server`
starts it, reads that line, checks that Health/Check answers SERVING, and stops it at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
from bench_server import (
    SERVER_START_SECONDS,
    BenchError,
    ServerProcess,
    kill,
    reported_port,
    serve_until_sigterm,
    wait_until_serving,
)
from grpc_health.v1 import health, health_pb2_grpc

__all__ = ["running_bare_server"]


# -- the server (the child process) --------------------------------------------------------------------------------


async def serve() -> None:
    server = grpc.aio.server()
    health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)  # "": SERVING from the start
    await serve_until_sigterm(server, None)


# -- the process (the parent's side) -------------------------------------------------------------------------------


@contextlib.contextmanager
def running_bare_server(log: Path) -> Iterator[ServerProcess]:
    """The bare server, its stderr in `log`; stopped with SIGTERM at the end, which it must survive with exit code 0."""
    with log.open("wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve())], stdout=subprocess.PIPE, stderr=log_file
        )
    try:
        port = reported_port(process, log, "the bare server")
        wait_until_serving(process, port, log, 1)
    except BaseException:
        kill(process)
        raise
    try:
        yield ServerProcess(process.pid, port)
    except BaseException:
        kill(process)
        raise
    process.send_signal(signal.SIGTERM)
    if (code := process.wait(SERVER_START_SECONDS)) != 0:
        raise BenchError(f"the bare server exited with code {code} on SIGTERM:\n{log.read_text()}")


if __name__ == "__main__":
    asyncio.run(serve())
