"""Cross-cutting work of every unary call: request id, root-key authentication, errors, access log.

Health checking and reflection need no credentials; every keyscope.v1 method
does. The servicer behind runs with `request_context` set and raises domain
errors; they become statuses here, through `keyscope_server.status`, and nowhere else.
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, cast

import grpc

from keyscope_server.credentials import hash_secret
from keyscope_server.errors import DomainError, FieldViolation, InvalidArgument, ServerStopping, Unauthenticated
from keyscope_server.metrics import Metrics
from keyscope_server.request_context import principal_var, request_id_var
from keyscope_server.status import to_status
from keyscope_server.store import Store

__all__ = ["KeyscopeInterceptor", "REQUEST_ID_HEADER"]

log = logging.getLogger("keyscope.rpc")

REQUEST_ID_HEADER = "x-request-id"
_CALLER_REQUEST_ID = re.compile(r"[\x21-\x7e]{1,128}")  # printable ASCII, no spaces
_BEARER = re.compile(r"bearer +(\S+) *", re.IGNORECASE)

Behaviour = Callable[[Any, grpc.aio.ServicerContext[Any, Any]], Awaitable[Any]]
Deserializer = Callable[[bytes], Any]


class _Undecodable:
    """What a request's bytes become when they are not a message of the method's request type."""


_UNDECODABLE = _Undecodable()
_NOT_A_MESSAGE = FieldViolation("request", "is not a valid protobuf message of this method's request type")


def _tolerant(deserialize: Deserializer | None) -> Deserializer | None:
    """The method's deserializer, answering _UNDECODABLE where it would raise: gRPC would answer UNKNOWN, naming
    the exception, before any of our code ran (no request id, no log line)."""
    if deserialize is None:
        return None

    def tolerant(data: bytes) -> Any:
        try:
            return deserialize(data)
        except Exception:  # noqa: BLE001 - whatever it raises, the bytes are not a request: one answer for all
            return _UNDECODABLE

    return tolerant


def _metadata_value(metadata: Iterable[tuple[str, Any]] | None, name: str) -> str | None:
    for key, value in metadata or ():
        if key == name:
            return value if isinstance(value, str) else None
    return None


def _request_id(metadata: Iterable[tuple[str, Any]] | None) -> str:
    sent = _metadata_value(metadata, REQUEST_ID_HEADER)
    if sent is not None and _CALLER_REQUEST_ID.fullmatch(sent):
        return sent
    return f"req_{secrets.token_hex(8)}"


class KeyscopeInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, store: Store, authenticated_prefix: str = "/keyscope.", metrics: Metrics | None = None) -> None:
        self._store = store
        self._metrics = metrics
        self._authenticated_prefix = authenticated_prefix
        self._wrapped: dict[str, grpc.RpcMethodHandler[Any, Any]] = {}
        self._refusing = False

    def refuse_new_calls(self) -> None:
        """From now on every unary call is answered UNAVAILABLE at once (calls already running go on)."""
        self._refusing = True

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler  # unknown methods and streams (Health/Watch, reflection) pass untouched
        method: str = handler_call_details.method
        wrapped = self._wrapped.get(method)
        if wrapped is None:
            inner = cast(Behaviour, handler.unary_unary)  # an asyncio server's: its methods are coroutines
            behaviour = self._wrap(method, inner, authenticate=method.startswith(self._authenticated_prefix))
            wrapped = grpc.unary_unary_rpc_method_handler(
                behaviour,
                request_deserializer=_tolerant(handler.request_deserializer),
                response_serializer=handler.response_serializer,
            )
            self._wrapped[method] = wrapped
        return wrapped

    def _wrap(self, method: str, inner: Behaviour, *, authenticate: bool) -> Behaviour:
        store = self._store
        calls = None if self._metrics is None else self._metrics.calls(method)

        async def behaviour(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            started = time.perf_counter()
            metadata = context.invocation_metadata()
            request_id = _request_id(metadata)
            request_id_token = request_id_var.set(request_id)
            principal_token = principal_var.set(None)
            code = grpc.StatusCode.OK
            caller = "-"
            if calls is not None:
                calls.started()
            try:
                if self._refusing:
                    raise ServerStopping()
                await context.send_initial_metadata(((REQUEST_ID_HEADER, request_id),))
                if authenticate:
                    principal = await store.authenticate(_root_key_hash(metadata), int(time.time() * 1000), request_id)
                    principal_var.set(principal)
                    caller = principal.root_key_id
                if request is _UNDECODABLE:
                    raise InvalidArgument([_NOT_A_MESSAGE])
                return await inner(request, context)
            except grpc.aio.AbortError:
                raise
            except asyncio.CancelledError:
                code = grpc.StatusCode.CANCELLED
                raise
            except Exception as exc:  # noqa: BLE001 - this is the one place errors become statuses
                if not isinstance(exc, DomainError):
                    log.exception("unexpected error in %s (request id %s)", method, request_id)
                status = to_status(exc, request_id)
                code = status.code
                if calls is not None:
                    calls.failed(exc)
                await context.abort(status.code, status.details, status.trailing_metadata)
            finally:
                if calls is not None:
                    calls.handled(code, time.perf_counter() - started)
                log.info("%s %s %.1fms caller=%s", method, code.name, (time.perf_counter() - started) * 1000, caller)
                principal_var.reset(principal_token)
                request_id_var.reset(request_id_token)

        return behaviour


def _root_key_hash(metadata: Iterable[tuple[str, Any]] | None) -> bytes:
    header = _metadata_value(metadata, "authorization")
    if header is None:
        raise Unauthenticated(
            "missing authorization metadata: send 'authorization: Bearer <root key>'", reason="missing"
        )
    match = _BEARER.fullmatch(header)
    if match is None:
        raise Unauthenticated("malformed authorization metadata: expected 'Bearer <root key>'", reason="malformed")
    return hash_secret(match.group(1))
