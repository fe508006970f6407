"""The hand-written clients: `Client` (blocking) and `AsyncClient` (asyncio), each a channel to one Keyscope server
and the typed stubs of its services.

    async with AsyncClient("keyscope.internal:50051", root_key=ROOT_KEY, tls=Tls(root_certificates=ca)) as client:
        answer = await client.keys.VerifyKey(VerifyKeyRequest(key=secret, permissions="documents.read"))

What a client adds to the bare stubs, for every call:
- the root key, as call credentials over TLS (gRPC's own `access_token_call_credentials`, sent only over a
  secure channel), or as the same `authorization` header on a plaintext channel. It is never logged, and not in
  the client's repr;
- a default deadline (`timeout`, in seconds) for a call made without one;
- typed exceptions (keyscope.errors) in place of gRPC's, with the google.rpc details the server sent;
- retries of UNAVAILABLE, by gRPC's own retry policy in the channel's service config, for the calls that are safe to
  repeat: the reads, VerifyKey, the replacements (UpdateScopes, SetPermissions, SetRoles, SetRolePermissions) and
  the additions and removals of a key's permissions and roles, which leave the same state however often they run.
  Creations, UpdateKey and the deletions are not retried: a repeat could create a second resource or answer
  NOT_FOUND for a delete that took place.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import grpc
import grpc.aio

from keyscope.errors import error_of
from keyscope.v1 import apis_pb2_grpc, audit_pb2_grpc, keys_pb2_grpc, roles_pb2_grpc

__all__ = ["DEFAULT_TIMEOUT", "RETRIED_METHODS", "AsyncClient", "Client", "Tls"]

DEFAULT_TIMEOUT = 10.0  # seconds, for a call made without a deadline of its own

RETRIED_METHODS: dict[str, tuple[str, ...]] = {
    "keyscope.v1.ApiService": ("GetApi", "ListApis", "ListPermissions", "UpdateScopes"),
    "keyscope.v1.KeyService": (
        "GetKey",
        "ListKeys",
        "VerifyKey",
        "SetPermissions",
        "AddPermissions",
        "RemovePermissions",
        "SetRoles",
        "AddRoles",
        "RemoveRoles",
    ),
    "keyscope.v1.RoleService": ("GetRole", "ListRoles", "SetRolePermissions"),
    "keyscope.v1.AuditService": ("ListAuditEvents",),
}

_SERVICE_CONFIG = json.dumps(
    {
        "methodConfig": [
            {
                "name": [
                    {"service": service, "method": method}
                    for service, methods in RETRIED_METHODS.items()
                    for method in methods
                ],
                "retryPolicy": {
                    "maxAttempts": 4,
                    "initialBackoff": "0.05s",
                    "maxBackoff": "1s",
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": ["UNAVAILABLE"],
                },
            }
        ]
    }
)


@dataclass(frozen=True)
class Tls:
    """TLS to the server: the CA to trust (None: the system's), and a client certificate where the server asks
    for one (mutual TLS)."""

    root_certificates: bytes | None = None
    private_key: bytes | None = None
    certificate_chain: bytes | None = None
    server_name: str | None = None  # the name to expect in the server's certificate, if not the target's host

    def credentials(self, root_key: str | None) -> grpc.ChannelCredentials:
        channel = grpc.ssl_channel_credentials(self.root_certificates, self.private_key, self.certificate_chain)
        if root_key is None:
            return channel
        return grpc.composite_channel_credentials(channel, grpc.access_token_call_credentials(root_key))


def _options(tls: Tls | None) -> list[tuple[str, Any]]:
    options: list[tuple[str, Any]] = [("grpc.service_config", _SERVICE_CONFIG), ("grpc.enable_retries", 1)]
    if tls is not None and tls.server_name is not None:
        options.append(("grpc.ssl_target_name_override", tls.server_name))
    return options


class _CallDetails(grpc.ClientCallDetails):
    def __init__(
        self,
        method: str,
        timeout: float | None,
        metadata: Sequence[tuple[str, str | bytes]],
        credentials: grpc.CallCredentials | None,
        wait_for_ready: bool | None,
        compression: grpc.Compression | None,
    ) -> None:
        self.method = method
        self.timeout = timeout
        self.metadata = tuple(metadata)
        self.credentials = credentials
        self.wait_for_ready = wait_for_ready
        self.compression = compression


class _Defaults:
    """What a client adds to every call: the plaintext channel's root-key header and the default deadline."""

    def __init__(self, metadata: Sequence[tuple[str, str]], timeout: float) -> None:
        self._metadata = tuple(metadata)
        self._timeout = timeout

    def _details(self, details: Any) -> _CallDetails:
        return _CallDetails(
            details.method,
            details.timeout if details.timeout is not None else self._timeout,
            (*(details.metadata or ()), *self._metadata),
            details.credentials,
            details.wait_for_ready,
            getattr(details, "compression", None),
        )


class _Interceptor(_Defaults, grpc.UnaryUnaryClientInterceptor):
    def intercept_unary_unary(self, continuation: Callable[..., Any], details: Any, request: Any) -> Any:
        outcome = continuation(self._details(details), request)
        failure = outcome.exception()
        if isinstance(failure, grpc.RpcError):
            raise error_of(failure) from None
        return outcome


class _AsyncInterceptor(_Defaults, grpc.aio.UnaryUnaryClientInterceptor):
    async def intercept_unary_unary(
        self, continuation: Callable[..., Awaitable[Any]], client_call_details: Any, request: Any
    ) -> Any:
        call = await continuation(self._details(client_call_details), request)
        try:
            await call
        except grpc.aio.AioRpcError as failure:
            raise error_of(failure) from None
        return call


def _plaintext_metadata(root_key: str | None, tls: Tls | None) -> tuple[tuple[str, str], ...]:
    # Over TLS the root key travels as call credentials; a plaintext channel cannot carry those.
    return (("authorization", f"Bearer {root_key}"),) if root_key is not None and tls is None else ()


class Client:
    """A blocking client of one Keyscope server: `client.apis`, `client.keys`, `client.roles`, `client.audit`."""

    def __init__(
        self, target: str, root_key: str | None = None, tls: Tls | None = None, timeout: float = DEFAULT_TIMEOUT
    ) -> None:
        options = _options(tls)
        if tls is None:
            channel = grpc.insecure_channel(target, options=options)
        else:
            channel = grpc.secure_channel(target, tls.credentials(root_key), options=options)
        self.target = target
        self._raw_channel = channel
        self.channel = grpc.intercept_channel(channel, _Interceptor(_plaintext_metadata(root_key, tls), timeout))
        self.apis = apis_pb2_grpc.ApiServiceStub(self.channel)
        self.keys = keys_pb2_grpc.KeyServiceStub(self.channel)
        self.roles = roles_pb2_grpc.RoleServiceStub(self.channel)
        self.audit = audit_pb2_grpc.AuditServiceStub(self.channel)

    def close(self) -> None:
        self._raw_channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Client({self.target!r})"


class AsyncClient:
    """An asyncio client of one Keyscope server: `await client.keys.VerifyKey(...)`. Make it inside the event loop
    that uses it."""

    def __init__(
        self, target: str, root_key: str | None = None, tls: Tls | None = None, timeout: float = DEFAULT_TIMEOUT
    ) -> None:
        options = _options(tls)
        interceptors = [_AsyncInterceptor(_plaintext_metadata(root_key, tls), timeout)]
        if tls is None:
            self.channel = grpc.aio.insecure_channel(target, options=options, interceptors=interceptors)
        else:
            credentials = tls.credentials(root_key)
            self.channel = grpc.aio.secure_channel(target, credentials, options=options, interceptors=interceptors)
        self.target = target
        self.apis = apis_pb2_grpc.ApiServiceStub(self.channel)
        self.keys = keys_pb2_grpc.KeyServiceStub(self.channel)
        self.roles = roles_pb2_grpc.RoleServiceStub(self.channel)
        self.audit = audit_pb2_grpc.AuditServiceStub(self.channel)

    async def close(self) -> None:
        await self.channel.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None
    ) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"AsyncClient({self.target!r})"
