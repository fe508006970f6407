"""grpc.health.v1.Health as grpcio-health-checking serves it, with its List method, which that servicer leaves
unimplemented (an exception, hence INTERNAL)."""

from __future__ import annotations

import grpc
from grpc_health.v1 import health, health_pb2

__all__ = ["HealthServicer"]


class HealthServicer(health.aio.HealthServicer):
    async def List(  # noqa: N802 - the RPC's name
        self, request: health_pb2.HealthListRequest, context: grpc.aio.ServicerContext
    ) -> health_pb2.HealthListResponse:
        """Every service whose health the server tracks, with its status now (as Check would answer it)."""
        return health_pb2.HealthListResponse(
            statuses={
                name: health_pb2.HealthCheckResponse(status=status) for name, status in self._server_status.items()
            }
        )
