"""grpc.health.v1.Health as grpcio-health-checking serves it, with its List method, which that servicer leaves
unimplemented (an exception, hence INTERNAL)."""

from __future__ import annotations

from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2

__all__ = ["HealthServicer"]


class HealthServicer(health.aio.HealthServicer):
    # typeshed's stubs of grpcio-health-checking predate List: its messages and the status map are untyped there.
    async def List(  # noqa: N802 - the RPC's name
        self,
        request: health_pb2.HealthListRequest,  # type: ignore[name-defined]
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> health_pb2.HealthListResponse:  # type: ignore[name-defined]
        """Every service whose health the server tracks, with its status now (as Check would answer it)."""
        statuses = self._server_status.items()  # type: ignore[attr-defined]
        return health_pb2.HealthListResponse(  # type: ignore[attr-defined]
            statuses={name: health_pb2.HealthCheckResponse(status=status) for name, status in statuses}
        )
