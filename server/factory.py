"""The one factory that builds and starts Keyscope's gRPC server. Tests use it too, with port 0."""

from __future__ import annotations

from dataclasses import dataclass

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from keyscope.v1 import apis_pb2, apis_pb2_grpc, keys_pb2, keys_pb2_grpc, roles_pb2, roles_pb2_grpc
from server.interceptor import KeyscopeInterceptor
from server.services import ApiService, KeyService, RoleService
from server.store import Store

__all__ = ["RunningServer", "ServerConfig", "SERVICE_NAMES", "start_server"]

SERVICE_NAMES = (
    apis_pb2.DESCRIPTOR.services_by_name["ApiService"].full_name,
    keys_pb2.DESCRIPTOR.services_by_name["KeyService"].full_name,
    roles_pb2.DESCRIPTOR.services_by_name["RoleService"].full_name,
)


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 50051
    max_message_bytes: int = 4 * 1024 * 1024
    # Let other processes listen on the same port (`serve --workers`); off, a second server there is an error.
    reuse_port: bool = False


@dataclass
class RunningServer:
    server: grpc.aio.Server
    port: int
    health: health.aio.HealthServicer

    async def stop(self, grace: float | None) -> None:
        """Report NOT_SERVING, refuse new calls, and let calls in flight finish within `grace` seconds."""
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace)


async def start_server(store: Store, config: ServerConfig) -> RunningServer:
    server = grpc.aio.server(
        interceptors=[KeyscopeInterceptor(store)],
        options=[
            ("grpc.max_receive_message_length", config.max_message_bytes),
            ("grpc.max_send_message_length", config.max_message_bytes),
            ("grpc.so_reuseport", int(config.reuse_port)),
        ],
    )
    apis_pb2_grpc.add_ApiServiceServicer_to_server(ApiService(store), server)
    keys_pb2_grpc.add_KeyServiceServicer_to_server(KeyService(store), server)
    roles_pb2_grpc.add_RoleServiceServicer_to_server(RoleService(store), server)

    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection((*SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME), server)

    address = f"{config.host}:{config.port}"
    port = server.add_insecure_port(address)
    if port == 0:
        raise OSError(f"cannot listen on {address}")
    await server.start()
    for name in ("", *SERVICE_NAMES):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    return RunningServer(server, port, health_servicer)
