"""The OTLP trace sink of `scripts/bench --production`: where the servers' sampled spans go, as a process of its own.

A `grpc.aio` server of OpenTelemetry's TraceService (opentelemetry.proto.collector.trace.v1, the generated code that
the opentelemetry-proto package ships) whose Export counts the spans of each request and discards them: the
collector the README's production settings point at, at the cost of a parse and a count. Run as a program
(`python scripts/bench_otlp_sink.py`), it listens in plaintext on 127.0.0.1 port 0, writes the port it was given as
one line on stdout once it serves, and on SIGTERM stops and writes what it counted as one more line, a JSON object
(`{"spans": N, "exports": M}`), before exiting 0. `running_otlp_sink` starts it, reads the port, and at the end
stops it and reads the counts: stop it only after every server that exports to it has stopped, as a server exports
the spans it still holds in its batch when it stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
from bench_server import SERVER_START_SECONDS, BenchError, kill, reported_port, serve_until_sigterm
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

__all__ = ["OtlpSink", "running_otlp_sink"]

STOP_GRACE_SECONDS = 5.0  # for an export in flight at SIGTERM, which should be none by then


# -- the sink (the child process) ----------------------------------------------------------------------------------


class CountingTraceService(trace_service_pb2_grpc.TraceServiceServicer):
    """Counts the spans and the Export calls, and keeps nothing."""

    def __init__(self) -> None:
        self.spans = 0
        self.exports = 0

    async def Export(
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        self.exports += 1
        self.spans += sum(len(scope.spans) for resource in request.resource_spans for scope in resource.scope_spans)
        return trace_service_pb2.ExportTraceServiceResponse()


async def serve() -> None:
    service = CountingTraceService()
    server = grpc.aio.server()
    # The generated _pb2_grpc module has no type information (opentelemetry-proto ships .pyi for _pb2 only).
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(service, server)  # type: ignore[no-untyped-call]
    await serve_until_sigterm(server, STOP_GRACE_SECONDS)
    print(json.dumps({"spans": service.spans, "exports": service.exports}), flush=True)


# -- the process (the parent's side) -------------------------------------------------------------------------------


@dataclass
class OtlpSink:
    """The running sink; `spans` and `exports` are known once it has stopped."""

    port: int
    spans: int | None = None
    exports: int | None = None

    @property
    def endpoint(self) -> str:
        """The sink as OTEL_EXPORTER_OTLP_ENDPOINT names it (plaintext: with OTEL_EXPORTER_OTLP_INSECURE=true)."""
        return f"http://127.0.0.1:{self.port}"


@contextlib.contextmanager
def running_otlp_sink(log: Path) -> Iterator[OtlpSink]:
    """The sink, its stderr in `log`; stopped with SIGTERM at the end, which it must survive with exit code 0, and
    its counts then set on the OtlpSink it yielded."""
    with log.open("wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve())], stdout=subprocess.PIPE, stderr=log_file
        )
    try:
        sink = OtlpSink(reported_port(process, log, "the OTLP sink"))
    except BaseException:
        kill(process)
        raise
    try:
        yield sink
    except BaseException:
        kill(process)
        raise
    process.send_signal(signal.SIGTERM)
    try:
        out, _ = process.communicate(timeout=SERVER_START_SECONDS)
    except subprocess.TimeoutExpired:
        kill(process)
        raise BenchError(f"the OTLP sink did not stop within {SERVER_START_SECONDS}s:\n{log.read_text()}") from None
    if process.returncode != 0:
        raise BenchError(f"the OTLP sink exited with code {process.returncode} on SIGTERM:\n{log.read_text()}")
    counts = json.loads(out.splitlines()[-1])
    sink.spans, sink.exports = int(counts["spans"]), int(counts["exports"])


if __name__ == "__main__":
    asyncio.run(serve())
