"""The health a server reports, under every name it serves, and waiting for it to turn (a store fault, its end)."""

from __future__ import annotations

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from keyscope_server.factory import SERVICE_NAMES
from tests.polling import until

__all__ = ["HEALTH_NAMES", "Serving", "health", "health_turns"]

Serving = health_pb2.HealthCheckResponse
HEALTH_NAMES = ("", *SERVICE_NAMES)


async def health(channel: grpc.aio.Channel) -> dict[str, int]:
    stub = health_pb2_grpc.HealthStub(channel)
    return {name: (await stub.Check(health_pb2.HealthCheckRequest(service=name))).status for name in HEALTH_NAMES}


async def health_turns(channel: grpc.aio.Channel, status: int, seconds: float, every: float) -> None:
    """Waits until every health name reports `status`, asking every `every` seconds; fails after `seconds`."""
    seen: dict[str, int] = {}

    async def turned() -> bool:
        seen.update(await health(channel))
        return all(answer == status for answer in seen.values())

    def described() -> str:
        shown = {name or '""': Serving.ServingStatus.Name(answer) for name, answer in seen.items()}
        return f"health {Serving.ServingStatus.Name(status)}; last seen {shown}"

    await until(turned, described, seconds, every=every)
