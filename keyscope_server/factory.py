"""The one factory that builds and starts Keyscope's gRPC server. Tests use it too, with port 0."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from keyscope.v1 import (
    apis_pb2,
    apis_pb2_grpc,
    audit_pb2,
    audit_pb2_grpc,
    keys_pb2,
    keys_pb2_grpc,
    roles_pb2,
    roles_pb2_grpc,
)
from keyscope_server.health import HealthServicer
from keyscope_server.interceptor import KeyscopeInterceptor
from keyscope_server.metrics import Metrics
from keyscope_server.metrics_endpoint import MetricsEndpoint, serve_metrics
from keyscope_server.page_tokens import PageTokens
from keyscope_server.reflection import enable_reflection
from keyscope_server.services import ApiService, AuditService, KeyService, RoleService
from keyscope_server.store import Store
from keyscope_server.throttle import Throttle, ThrottleConfig
from keyscope_server.tracing import CallTracer, Tracing

__all__ = [
    "MetricsConfig",
    "RunningServer",
    "ServerConfig",
    "SERVICE_NAMES",
    "ThrottleConfig",
    "TlsConfig",
    "start_server",
]

log = logging.getLogger("keyscope")

REFUSING_SECONDS = 0.25

SERVICE_NAMES = (
    apis_pb2.DESCRIPTOR.services_by_name["ApiService"].full_name,
    keys_pb2.DESCRIPTOR.services_by_name["KeyService"].full_name,
    roles_pb2.DESCRIPTOR.services_by_name["RoleService"].full_name,
    audit_pb2.DESCRIPTOR.services_by_name["AuditService"].full_name,
)


@dataclass(frozen=True)
class TlsConfig:
    """PEM bytes. With `client_ca`, every client must present a certificate that it signed (mutual TLS)."""

    cert_chain: bytes
    private_key: bytes = field(repr=False)
    client_ca: bytes | None = None


@dataclass(frozen=True)
class MetricsConfig:
    """Prometheus metrics, on the server's host. `port` None: recorded, not served (a worker of `serve --workers`,
    whose supervisor serves every worker's numbers from PROMETHEUS_MULTIPROC_DIR)."""

    port: int | None = 0  # 0: any free port
    # How often the numbers the store keeps (cache, revision) are copied into the instruments.
    refresh_seconds: float = 1.0


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 50051
    max_message_bytes: int = 4 * 1024 * 1024
    # Let other processes listen on the same port (`serve --workers`); off, a second server there is an error.
    reuse_port: bool = False
    tls: TlsConfig | None = None  # None: plaintext
    # How often the store is probed (file there and writable, room left); health follows what it finds.
    store_probe_seconds: float = 1.0
    # Set: a server span for every call, through the OpenTelemetry gRPC instrumentation (see keyscope_server.tracing).
    tracing: Tracing | None = None
    # Budgets of failed lookups of unknown credentials (keyscope_server.throttle); ThrottleConfig(0, 0): off.
    throttle: ThrottleConfig = ThrottleConfig()
    metrics: MetricsConfig | None = None  # None: no metrics, and no cost for them


@dataclass
class RunningServer:
    server: grpc.aio.Server
    port: int
    health: health.aio.HealthServicer
    store_watch: asyncio.Task[None]
    interceptor: KeyscopeInterceptor
    store: Store | None = None  # set with metrics, for their last refresh
    metrics: Metrics | None = None
    metrics_follow: asyncio.Task[None] | None = None
    metrics_endpoint: MetricsEndpoint | None = None

    @property
    def metrics_port(self) -> int | None:
        return None if self.metrics_endpoint is None else self.metrics_endpoint.port

    async def stop(self, grace: float | None, lame_duck: float = 0.0) -> None:
        """Report NOT_SERVING and go on serving for `lame_duck` seconds while callers move away; then answer
        new calls UNAVAILABLE for a moment (REFUSING_SECONDS); then stop taking calls and let calls in flight
        finish within `grace` seconds.

        Why the two phases: a call gRPC has received but not yet handed to a handler when `server.stop` begins
        ends CANCELLED, unrun. Serving on, then refusing through the interceptor, hands every call already on
        its way a real answer (OK, or a retryable UNAVAILABLE that changed nothing) before the stop.
        """
        await self.health.enter_graceful_shutdown()
        self.store_watch.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.store_watch
        if lame_duck > 0:
            await asyncio.sleep(lame_duck)
            self.interceptor.refuse_new_calls()
            await asyncio.sleep(REFUSING_SECONDS)
        await self.server.stop(grace)
        if self.metrics_follow is not None:
            self.metrics_follow.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.metrics_follow
        if self.metrics is not None and self.store is not None:
            self.store.observe_batches(None)
            await self.metrics.refresh(self.store)  # the last numbers, for a supervisor's scrape after this
        if self.metrics_endpoint is not None:
            await asyncio.to_thread(self.metrics_endpoint.close)


async def _watch_store(
    store: Store, health_servicer: health.aio.HealthServicer, interval: float, metrics: Metrics | None
) -> None:
    """Keep health in step with the store: NOT_SERVING while it cannot take writes, SERVING once it can."""
    serving = True
    while True:
        await asyncio.sleep(interval)
        try:
            fault = await store.probe()
        except Exception:  # noqa: BLE001 - the watch must outlive any one failed probe
            log.exception("store probe failed")
            continue
        if (fault is None) == serving:
            continue
        serving = fault is None
        if metrics is not None:
            metrics.store_serving(serving)
        if fault is None:
            log.info("store recovered: serving again")
        else:
            log.warning("store fault, health NOT_SERVING until it is gone: %s", fault.message)
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        for name in ("", *SERVICE_NAMES):
            await health_servicer.set(name, status)


async def start_server(store: Store, config: ServerConfig) -> RunningServer:
    page_tokens = PageTokens(await store.page_token_key())  # before any gRPC object exists that would need a stop
    throttle = Throttle(config.throttle)
    metrics = None if config.metrics is None else Metrics()
    interceptor = KeyscopeInterceptor(
        store,
        max_message_bytes=config.max_message_bytes,
        throttle=throttle,
        metrics=metrics,
        tracer=None if config.tracing is None else CallTracer(config.tracing),
    )
    server = grpc.aio.server(
        options=[
            # Up to twice the limit, gRPC's core takes a request in and Keyscope refuses it (RESOURCE_EXHAUSTED, with
            # the request id and a log line); past that the core refuses it before any code of ours runs.
            ("grpc.max_receive_message_length", min(2 * config.max_message_bytes, 2**31 - 1)),
            ("grpc.max_send_message_length", config.max_message_bytes),
            ("grpc.so_reuseport", int(config.reuse_port)),
        ],
    )
    registering = interceptor.registering(server)
    apis_pb2_grpc.add_ApiServiceServicer_to_server(ApiService(store, page_tokens), registering)
    keys_pb2_grpc.add_KeyServiceServicer_to_server(KeyService(store, page_tokens, throttle), registering)
    roles_pb2_grpc.add_RoleServiceServicer_to_server(RoleService(store, page_tokens), registering)
    audit_pb2_grpc.add_AuditServiceServicer_to_server(AuditService(store, page_tokens), registering)

    health_servicer = HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, registering)
    enable_reflection(registering, (*SERVICE_NAMES, health.SERVICE_NAME))

    address = f"{config.host}:{config.port}"
    if config.tls is None:
        port = server.add_insecure_port(address)
    else:
        credentials = grpc.ssl_server_credentials(
            [(config.tls.private_key, config.tls.cert_chain)],
            root_certificates=config.tls.client_ca,
            require_client_auth=config.tls.client_ca is not None,
        )
        port = server.add_secure_port(address, credentials)
    if port == 0:
        raise OSError(f"cannot listen on {address}")
    await server.start()
    for name in ("", *SERVICE_NAMES):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    watch = asyncio.create_task(
        _watch_store(store, health_servicer, config.store_probe_seconds, metrics), name="store-watch"
    )
    running = RunningServer(server, port, health_servicer, watch, interceptor)
    if metrics is not None and config.metrics is not None:
        running.store, running.metrics = store, metrics
        store.observe_batches(metrics.batch_committed)
        running.metrics_follow = asyncio.create_task(
            metrics.follow(store, config.metrics.refresh_seconds), name="metrics-follow"
        )
        if config.metrics.port is not None:
            try:
                running.metrics_endpoint = serve_metrics(metrics.registry, config.host, config.metrics.port)
            except BaseException:
                await running.stop(None)
                raise
    return running
