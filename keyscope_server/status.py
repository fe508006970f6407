"""The one place where errors become gRPC statuses with rich details (google.rpc.*).

Every status carries a google.rpc.RequestInfo with the request id. Details are
kept under a byte budget: they travel in trailing metadata, which peers limit
to a few KiB, so long lists are cut and the message says how many were left out.
"""

from __future__ import annotations

import logging

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.protobuf.message import Message
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from keyscope_server.errors import (
    AlreadyExists,
    DomainError,
    EtagMismatch,
    InvalidArgument,
    MessageTooLarge,
    NotFound,
    PermissionDenied,
    RevisionNotReached,
    ServerStopping,
    StoreFull,
    StoreUnavailable,
    Throttled,
    Unauthenticated,
)

__all__ = ["DETAILS_BUDGET", "MESSAGE_BUDGET", "to_status"]

log = logging.getLogger(__name__)

DOMAIN = "keyscope.v1"
# The message travels twice (grpc-message, and inside grpc-status-details-bin with the details, base64): with
# these budgets all trailers stay near 5 KiB, under the 8 KiB that clients accept by default.
DETAILS_BUDGET = 2048  # bytes of details
MESSAGE_BUDGET = 1024  # characters of message


def _within_budget(items: list[Message]) -> tuple[list[Message], int]:
    kept: list[Message] = []
    used = 0
    for item in items:
        used += item.ByteSize()
        if used > DETAILS_BUDGET:
            break
        kept.append(item)
    return kept, len(items) - len(kept)


def _cut(names: tuple[str, ...], budget: int = MESSAGE_BUDGET // 2) -> str:
    shown: list[str] = []
    used = 0
    for name in names:
        used += len(name) + 1
        if used > budget:
            shown.append(f"... ({len(names) - len(shown)} more)")
            break
        shown.append(name)
    return ",".join(shown)


def _details(exc: DomainError) -> tuple[int, str, list[Message]]:
    message = exc.message
    if isinstance(exc, InvalidArgument):
        violations: list[Message] = [
            error_details_pb2.BadRequest.FieldViolation(field=v.field, description=v.description)
            for v in exc.violations
        ]
        kept, dropped = _within_budget(violations)
        if dropped:
            message += f"; {dropped} more violations not listed"
        return code_pb2.INVALID_ARGUMENT, message, [error_details_pb2.BadRequest(field_violations=kept)]
    if isinstance(exc, Unauthenticated):
        info = error_details_pb2.ErrorInfo(reason="UNAUTHENTICATED", domain=DOMAIN)
        return code_pb2.UNAUTHENTICATED, message, [info]
    if isinstance(exc, PermissionDenied):
        metadata = {"permission": exc.permission}
        if exc.subjects:
            metadata["permissions_not_in_catalog"] = _cut(exc.subjects)
        info = error_details_pb2.ErrorInfo(reason=exc.reason, domain=DOMAIN, metadata=metadata)
        return code_pb2.PERMISSION_DENIED, message, [info]
    if isinstance(exc, NotFound):
        infos: list[Message] = [
            error_details_pb2.ResourceInfo(
                resource_type=exc.resource_type,
                resource_name=name,
                description="not found, or not visible to this root key",
            )
            for name in exc.names
        ]
        kept, dropped = _within_budget(infos)
        if dropped or len(message) > MESSAGE_BUDGET // 2:
            message = f"{exc.resource_type} not found: {_cut(exc.names)}"
        return code_pb2.NOT_FOUND, message, kept
    if isinstance(exc, AlreadyExists):
        info = error_details_pb2.ResourceInfo(resource_type=exc.resource_type, resource_name=exc.name)
        return code_pb2.ALREADY_EXISTS, message, [info]
    if isinstance(exc, RevisionNotReached):
        info = error_details_pb2.ErrorInfo(
            reason="REVISION_NOT_REACHED",
            domain=DOMAIN,
            metadata={"min_revision": str(exc.requested), "revision": str(exc.current)},
        )
        return code_pb2.OUT_OF_RANGE, message, [info]
    if isinstance(exc, EtagMismatch):
        details: list[Message] = [
            error_details_pb2.ErrorInfo(reason="ETAG_MISMATCH", domain=DOMAIN, metadata={"etag": exc.current}),
            error_details_pb2.ResourceInfo(resource_type=exc.resource_type, resource_name=exc.resource_id),
        ]
        return code_pb2.ABORTED, message, details
    if isinstance(exc, StoreFull):
        info = error_details_pb2.ErrorInfo(reason="STORE_FULL", domain=DOMAIN)
        return code_pb2.RESOURCE_EXHAUSTED, message, [info]
    if isinstance(exc, Throttled):
        delay = duration_pb2.Duration()
        delay.FromNanoseconds(round(exc.retry_after * 1e9))
        throttled: list[Message] = [
            error_details_pb2.ErrorInfo(reason=exc.reason, domain=DOMAIN),
            error_details_pb2.RetryInfo(retry_delay=delay),
        ]
        return code_pb2.RESOURCE_EXHAUSTED, message, throttled
    if isinstance(exc, MessageTooLarge):
        info = error_details_pb2.ErrorInfo(
            reason="MESSAGE_TOO_LARGE", domain=DOMAIN, metadata={"limit_bytes": str(exc.limit)}
        )
        return code_pb2.RESOURCE_EXHAUSTED, message, [info]
    if isinstance(exc, ServerStopping):
        return code_pb2.UNAVAILABLE, message, [error_details_pb2.ErrorInfo(reason="SERVER_STOPPING", domain=DOMAIN)]
    if isinstance(exc, StoreUnavailable):
        return code_pb2.UNAVAILABLE, message, []
    raise TypeError(f"no status for {type(exc).__name__}")  # a new DomainError needs a case here


def to_status(exc: BaseException, request_id: str) -> grpc.Status:
    """The status to answer `exc` with. Anything that is not a DomainError is INTERNAL, without internals."""
    if isinstance(exc, DomainError):
        code, message, details = _details(exc)
    else:
        code, message, details = (code_pb2.INTERNAL, f"internal error (request id {request_id})", [])
    if len(message) > MESSAGE_BUDGET:
        message = message[: MESSAGE_BUDGET - 1] + "…"
    details = [*details, error_details_pb2.RequestInfo(request_id=request_id)]
    packed = []
    for detail in details:
        any_detail = any_pb2.Any()
        any_detail.Pack(detail)
        packed.append(any_detail)
    return rpc_status.to_status(status_pb2.Status(code=code, message=message, details=packed))
