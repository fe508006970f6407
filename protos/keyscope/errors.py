"""Keyscope's errors as typed exceptions, one class per gRPC code, with the `google.rpc` details the server sends.

Every exception is a `grpc.RpcError` too, with `code()` and `details()` as gRPC's own errors have them, so code
written against the bare stubs keeps working. The details are read from the `grpc-status-details-bin` trailer
(grpcio-status); the fields below pick out what Keyscope puts there.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar

import grpc
from google.protobuf.message import Message
from google.rpc import error_details_pb2
from grpc_status import rpc_status

__all__ = [
    "Aborted",
    "AlreadyExists",
    "DeadlineExceeded",
    "FieldViolation",
    "Internal",
    "InvalidArgument",
    "KeyscopeError",
    "NotFound",
    "OutOfRange",
    "PermissionDenied",
    "ResourceExhausted",
    "Unauthenticated",
    "Unavailable",
    "error_of",
]

_DETAIL_TYPES: tuple[type[Message], ...] = (
    error_details_pb2.BadRequest,
    error_details_pb2.ErrorInfo,
    error_details_pb2.ResourceInfo,
    error_details_pb2.RequestInfo,
    error_details_pb2.RetryInfo,
    error_details_pb2.QuotaFailure,
    error_details_pb2.PreconditionFailure,
    error_details_pb2.DebugInfo,
    error_details_pb2.Help,
    error_details_pb2.LocalizedMessage,
)


@dataclass(frozen=True, slots=True)
class FieldViolation:
    """One field of a request and what is wrong with it, as `google.rpc.BadRequest` names them."""

    field: str
    description: str


class KeyscopeError(grpc.RpcError):
    """A call that Keyscope (or the channel to it) answered with an error."""

    CODE: ClassVar[grpc.StatusCode | None] = None  # the code of each subclass; None: any other code

    def __init__(self, code: grpc.StatusCode, message: str, details: Sequence[Message] = ()) -> None:
        super().__init__(message)
        self._code = code
        self._message = message
        self.details_messages: tuple[Message, ...] = tuple(details)

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        """The status message, as `grpc.RpcError.details()` gives it."""
        return self._message

    @property
    def message(self) -> str:
        return self._message

    def _first(self, kind: type[Message]) -> Message | None:
        return next((d for d in self.details_messages if isinstance(d, kind)), None)

    @property
    def request_id(self) -> str | None:
        """The id the server logged the call under (google.rpc.RequestInfo), to quote when asking about it."""
        info = self._first(error_details_pb2.RequestInfo)
        return info.request_id if isinstance(info, error_details_pb2.RequestInfo) else None

    @property
    def reason(self) -> str | None:
        """google.rpc.ErrorInfo's reason (ETAG_MISMATCH, STORE_FULL, ...), if the error has one."""
        info = self._first(error_details_pb2.ErrorInfo)
        return info.reason if isinstance(info, error_details_pb2.ErrorInfo) else None

    @property
    def metadata(self) -> Mapping[str, str]:
        """google.rpc.ErrorInfo's metadata, empty if the error has none."""
        info = self._first(error_details_pb2.ErrorInfo)
        return dict(info.metadata) if isinstance(info, error_details_pb2.ErrorInfo) else {}

    @property
    def retry_delay(self) -> float | None:
        """Seconds to wait before trying again (google.rpc.RetryInfo), if the server said; a throttled call's
        ResourceExhausted says."""
        info = self._first(error_details_pb2.RetryInfo)
        if not isinstance(info, error_details_pb2.RetryInfo):
            return None
        return float(info.retry_delay.seconds + info.retry_delay.nanos / 1e9)

    @property
    def resources(self) -> tuple[tuple[str, str], ...]:
        """(resource_type, resource_name) of each google.rpc.ResourceInfo."""
        return tuple(
            (d.resource_type, d.resource_name)
            for d in self.details_messages
            if isinstance(d, error_details_pb2.ResourceInfo)
        )

    def __str__(self) -> str:
        request = f" (request {self.request_id})" if self.request_id else ""
        return f"{self._code.name}: {self._message}{request}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._code.name}, {self._message!r})"


class InvalidArgument(KeyscopeError):
    """A field of the request breaks a rule; nothing was changed."""

    CODE = grpc.StatusCode.INVALID_ARGUMENT

    @property
    def field_violations(self) -> tuple[FieldViolation, ...]:
        return tuple(
            FieldViolation(v.field, v.description)
            for d in self.details_messages
            if isinstance(d, error_details_pb2.BadRequest)
            for v in d.field_violations
        )


class Unauthenticated(KeyscopeError):
    """The root key is missing, malformed, unknown, disabled or expired."""

    CODE = grpc.StatusCode.UNAUTHENTICATED


class PermissionDenied(KeyscopeError):
    """The root key lacks a permission; `permission` names it."""

    CODE = grpc.StatusCode.PERMISSION_DENIED

    @property
    def permission(self) -> str | None:
        return self.metadata.get("permission")


class NotFound(KeyscopeError):
    """It does not exist, or the caller may not read it; `resources` names what."""

    CODE = grpc.StatusCode.NOT_FOUND


class AlreadyExists(KeyscopeError):
    CODE = grpc.StatusCode.ALREADY_EXISTS


class Aborted(KeyscopeError):
    """The request's etag is no longer the resource's; `current_etag` is the one to read-modify-write with."""

    CODE = grpc.StatusCode.ABORTED

    @property
    def current_etag(self) -> str | None:
        return self.metadata.get("etag")


class OutOfRange(KeyscopeError):
    """A read's min_revision is ahead of the store; `metadata["revision"]` is where the store is."""

    CODE = grpc.StatusCode.OUT_OF_RANGE


class ResourceExhausted(KeyscopeError):
    """Too large a request, a full store, or too many failed lookups (throttled: wait `retry_delay` seconds)."""

    CODE = grpc.StatusCode.RESOURCE_EXHAUSTED


class Unavailable(KeyscopeError):
    """The server or its store cannot take the call now; nothing was changed. Retried by the client where safe."""

    CODE = grpc.StatusCode.UNAVAILABLE


class DeadlineExceeded(KeyscopeError):
    CODE = grpc.StatusCode.DEADLINE_EXCEEDED


class Internal(KeyscopeError):
    """A bug in the server, logged there under `request_id`."""

    CODE = grpc.StatusCode.INTERNAL


_BY_CODE: dict[grpc.StatusCode, type[KeyscopeError]] = {
    cls.CODE: cls
    for cls in (
        InvalidArgument,
        Unauthenticated,
        PermissionDenied,
        NotFound,
        AlreadyExists,
        Aborted,
        OutOfRange,
        ResourceExhausted,
        Unavailable,
        DeadlineExceeded,
        Internal,
    )
    if cls.CODE is not None
}


def _unpacked(status: object) -> list[Message]:
    found: list[Message] = []
    for detail in getattr(status, "details", ()):
        for kind in _DETAIL_TYPES:
            if detail.Is(kind.DESCRIPTOR):
                message = kind()
                detail.Unpack(message)
                found.append(message)
                break
    return found


def error_of(error: grpc.RpcError) -> KeyscopeError:
    """The typed exception of a failed call (a grpc.Call that is an RpcError: sync or asyncio)."""
    if isinstance(error, KeyscopeError):
        return error
    code: grpc.StatusCode = error.code()
    message: str = error.details() or ""
    try:
        status = rpc_status.from_call(error)  # type: ignore[arg-type]
    except ValueError:  # a details trailer that does not agree with the code or message: its details are left out
        status = None
    return _BY_CODE.get(code, KeyscopeError)(code, message, _unpacked(status) if status is not None else ())
