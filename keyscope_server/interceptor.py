"""Cross-cutting work of every unary call: request id, root-key authentication, errors, access log.

Health checking and reflection need no credentials; every keyscope.v1 method
does. The servicer behind runs with `request_context` set and raises domain
errors; they become statuses here, through `keyscope_server.status`, and nowhere else.

The work is done by wrapping each method's handler once, as the services are
registered (`KeyscopeInterceptor.registering`), not by a grpc.aio
ServerInterceptor: that one would cost every call an extra coroutine and a
handler lookup through it before any of this work began. The request id travels
in trailing metadata, which gRPC sends with the status anyway; in initial
metadata it would cost every call a send of its own.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeAlias, cast

import grpc

from keyscope_server.credentials import hash_secret
from keyscope_server.errors import (
    DomainError,
    FieldViolation,
    InvalidArgument,
    MessageTooLarge,
    ServerStopping,
    Unauthenticated,
)
from keyscope_server.logs import auth_failure_warnings
from keyscope_server.metrics import Metrics
from keyscope_server.request_context import principal_var, request_id_var, verify_outcome_var
from keyscope_server.status import to_status
from keyscope_server.store import Store
from keyscope_server.throttle import NO_THROTTLE, Throttle
from keyscope_server.tracing import CallTracer, annotate_span

__all__ = ["KeyscopeInterceptor", "REQUEST_ID_HEADER"]

log = logging.getLogger("keyscope.rpc")

REQUEST_ID_HEADER = "x-request-id"
_CALLER_REQUEST_ID = re.compile(r"[\x21-\x7e]{1,128}")  # printable ASCII, no spaces
_BEARER = re.compile(r"bearer +(\S+) *", re.IGNORECASE)

Behaviour = Callable[[Any, grpc.aio.ServicerContext[Any, Any]], Awaitable[Any]]
Deserializer = Callable[[bytes], Any]
Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"  # typeshed's generic; not subscriptable at run time


class _Unusable:
    """What a request's bytes become when they cannot be a request of the method: more of them than the server takes
    (`size`), or not a message of its type (`size` None). The call answers it after authentication, as any call."""

    __slots__ = ("size",)

    def __init__(self, size: int | None = None) -> None:
        self.size = size

    def error(self, max_bytes: int) -> DomainError:
        if self.size is None:
            return InvalidArgument([_NOT_A_MESSAGE])
        return MessageTooLarge(self.size, max_bytes)


_UNDECODABLE = _Unusable()
_NOT_A_MESSAGE = FieldViolation("request", "is not a valid protobuf message of this method's request type")


def _tolerant(deserialize: Deserializer | None, max_bytes: int) -> Deserializer | None:
    """The method's deserializer, answering _Unusable where it would raise (gRPC would answer UNKNOWN, naming the
    exception, before any of our code ran: no request id, no log line) or where the bytes are past `max_bytes`."""
    if deserialize is None:
        return None

    def tolerant(data: bytes) -> Any:
        if len(data) > max_bytes:
            return _Unusable(len(data))
        try:
            return deserialize(data)
        except Exception:  # noqa: BLE001 - whatever it raises, the bytes are not a request: one answer for all
            return _UNDECODABLE

    return tolerant


def _new_request_id() -> str:
    # A correlation id, not a secret: the Mersenne Twister is enough, and spares every call a getrandom(2).
    return f"req_{random.getrandbits(64):016x}"


def _root_key_hash(header: str | None) -> bytes:
    if header is None:
        raise Unauthenticated(
            "missing authorization metadata: send 'authorization: Bearer <root key>'", reason="missing"
        )
    match = _BEARER.fullmatch(header)
    if match is None:
        raise Unauthenticated("malformed authorization metadata: expected 'Bearer <root key>'", reason="malformed")
    return hash_secret(match.group(1))


class KeyscopeInterceptor:
    def __init__(
        self,
        store: Store,
        authenticated_prefix: str = "/keyscope.",
        *,
        max_message_bytes: int = 4 * 1024 * 1024,
        throttle: Throttle = NO_THROTTLE,
        metrics: Metrics | None = None,
        tracer: CallTracer | None = None,
    ) -> None:
        """`throttle`: the budgets of failed root-key lookups by peer; `metrics`: where calls are counted;
        `tracer`: puts the sampled calls, of every method, in OpenTelemetry server spans, which get the request id
        and the caller."""
        self._store = store
        self._max_message_bytes = max_message_bytes
        self._throttle = throttle
        self._metrics = metrics
        self._tracer = tracer
        self._authenticated_prefix = authenticated_prefix
        self._refusing = False

    def refuse_new_calls(self) -> None:
        """From now on every unary call is answered UNAVAILABLE at once (calls already running go on)."""
        self._refusing = True

    def registering(self, server: grpc.aio.Server) -> grpc.aio.Server:
        """What to register services on in place of `server`: the generated `add_*_to_server` functions (and
        anything else that registers handlers) given it register on `server` every unary handler wrapped."""
        return cast(grpc.aio.Server, _WrappingRegistrar(server, self.wrap))

    def wrap(self, method: str, handler: Handler) -> Handler:
        """`handler` of `method` ("/package.Service/Method") doing this module's work around it (a stream's handler,
        Health/Watch or reflection, as it is), inside the tracer's span if there is a tracer."""
        if handler.unary_unary is not None:
            inner = cast(Behaviour, handler.unary_unary)  # an asyncio server's: its methods are coroutines
            behaviour = self._behaviour(method, inner, authenticate=method.startswith(self._authenticated_prefix))
            handler = grpc.unary_unary_rpc_method_handler(
                behaviour,
                request_deserializer=_tolerant(handler.request_deserializer, self._max_message_bytes),
                response_serializer=handler.response_serializer,
            )
        return handler if self._tracer is None else self._tracer.wrap(method, handler)

    def _behaviour(self, method: str, inner: Behaviour, *, authenticate: bool) -> Behaviour:
        store = self._store
        throttle = self._throttle
        traced = self._tracer is not None
        max_message_bytes = self._max_message_bytes
        calls = None if self._metrics is None else self._metrics.calls(method)

        async def behaviour(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            started = time.perf_counter()
            request_id: str | None = None
            authorization: str | None = None
            for key, value in context.invocation_metadata() or ():
                if key == REQUEST_ID_HEADER:
                    if isinstance(value, str) and _CALLER_REQUEST_ID.fullmatch(value):
                        request_id = value
                elif key == "authorization" and isinstance(value, str):
                    authorization = value
            if request_id is None:
                request_id = _new_request_id()
            request_id_token = request_id_var.set(request_id)
            principal_token = principal_var.set(None)
            code = grpc.StatusCode.OK
            caller: str | None = None
            if calls is not None:
                calls.started()
            try:
                if self._refusing:
                    raise ServerStopping()
                if authenticate:
                    secret_hash = _root_key_hash(authorization)
                    now_ms = int(time.time() * 1000)
                    principal = await store.authenticate(secret_hash, now_ms, request_id, throttle.for_peer(context))
                    principal_var.set(principal)
                    caller = principal.root_key_id
                if type(request) is _Unusable:
                    raise request.error(max_message_bytes)
                response = await inner(request, context)
                context.set_trailing_metadata(((REQUEST_ID_HEADER, request_id),))
                return response
            except grpc.aio.AbortError:
                raise
            except asyncio.CancelledError:
                code = grpc.StatusCode.CANCELLED
                raise
            except Exception as exc:  # noqa: BLE001 - this is the one place errors become statuses
                if not isinstance(exc, DomainError):
                    log.exception("unexpected error in %s (request id %s)", method, request_id)
                elif isinstance(exc, Unauthenticated):
                    auth_failure_warnings.failed(context.peer(), exc.message)
                status = to_status(exc, request_id)
                code = status.code
                if calls is not None:
                    calls.failed(exc)
                await context.abort(
                    status.code, status.details, (*status.trailing_metadata, (REQUEST_ID_HEADER, request_id))
                )
            finally:
                outcome = verify_outcome_var.get()  # VerifyKey's answer, set by its servicer
                if calls is not None:
                    calls.handled(code, time.perf_counter() - started, outcome)
                if traced:
                    annotate_span(request_id, caller)
                if log.isEnabledFor(logging.INFO):  # the extras are the fields of JSON lines (logs.py)
                    ms, peer = (time.perf_counter() - started) * 1000, context.peer()
                    extra = {
                        "method": method,
                        "code": code.name,
                        "duration_ms": ms,
                        "caller": caller,
                        "peer": peer,
                        "outcome": outcome,
                    }
                    log.info("%s %s %.1fms caller=%s peer=%s", method, code.name, ms, caller or "-", peer, extra=extra)
                principal_var.reset(principal_token)
                request_id_var.reset(request_id_token)

        return behaviour


class _WrappedGenericHandler(grpc.GenericRpcHandler):
    def __init__(self, inner: grpc.GenericRpcHandler, wrap: Callable[[str, Handler], Handler]) -> None:
        self._inner = inner
        self._wrap = wrap
        self._wrapped: dict[str, Handler | None] = {}

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> Handler | None:
        method: str = handler_call_details.method
        try:
            return self._wrapped[method]
        except KeyError:
            pass
        handler = self._inner.service(handler_call_details)
        wrapped = None if handler is None else self._wrap(method, handler)
        if wrapped is not None:  # an unknown method's name is the caller's to choose: it is not kept
            self._wrapped[method] = wrapped
        return wrapped


class _WrappingRegistrar:
    """Stands in for a grpc.aio.Server while services register: passes every handler on, wrapped."""

    def __init__(self, server: grpc.aio.Server, wrap: Callable[[str, Handler], Handler]) -> None:
        self._server = server
        self._wrap = wrap

    def add_generic_rpc_handlers(self, generic_rpc_handlers: Sequence[grpc.GenericRpcHandler]) -> None:
        self._server.add_generic_rpc_handlers(
            tuple(_WrappedGenericHandler(handler, self._wrap) for handler in generic_rpc_handlers)
        )

    def add_registered_method_handlers(self, service_name: str, method_handlers: Mapping[str, Handler]) -> None:
        self._server.add_registered_method_handlers(
            service_name,
            {name: self._wrap(f"/{service_name}/{name}", handler) for name, handler in method_handlers.items()},
        )
