"""`/metrics` over HTTP: one server's registry (`serve_metrics`), or, for the supervisor of `serve --workers N`,
the values its workers write to a directory (`serve_multiprocess`, prometheus-client's multiprocess mode).

Apart from keyscope_server.metrics, whose instruments need grpc and the server's modules: the supervisor imports
only this and prometheus-client."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, multiprocess, start_http_server

__all__ = ["MetricsEndpoint", "MultiprocessEndpoint", "serve_metrics", "serve_multiprocess"]


@dataclass
class MetricsEndpoint:
    """`/metrics` served over HTTP from a thread of its own (prometheus-client's server)."""

    port: int
    _server: WSGIServer
    _thread: threading.Thread

    def close(self) -> None:
        """Stop serving (blocks up to half a second, the server's poll interval)."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


def serve_metrics(registry: CollectorRegistry, host: str, port: int) -> MetricsEndpoint:
    """Serve `registry` on http://host:port/metrics (port 0: a free one)."""
    server, thread = start_http_server(port, addr=host, registry=registry)
    return MetricsEndpoint(int(server.server_port), server, thread)


@dataclass
class MultiprocessEndpoint:
    """What `serve_multiprocess` gives the supervisor: the port, the directory its workers write to (their
    PROMETHEUS_MULTIPROC_DIR), and `worker_exited(pid)`, for its gauges to leave the live ones."""

    port: int
    directory: str

    def worker_exited(self, pid: int) -> None:
        multiprocess.mark_process_dead(pid, self.directory)  # type: ignore[no-untyped-call]


@contextlib.contextmanager
def serve_multiprocess(host: str, port: int) -> Iterator[MultiprocessEndpoint]:
    """Serve, on one port, the metrics that worker processes write to a new directory; remove it at the end."""
    directory = tempfile.mkdtemp(prefix="keyscope-metrics-")
    try:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
        endpoint = serve_metrics(registry, host, port)
        try:
            yield MultiprocessEndpoint(endpoint.port, directory)
        finally:
            endpoint.close()
    finally:
        shutil.rmtree(directory, ignore_errors=True)
