"""What every answer to a fuzzed request must be: OK, or a deliberate error code with its google.rpc details, in
trailers a default client accepts, naming only fields the request has."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import grpc
from google.protobuf.descriptor import MethodDescriptor
from google.protobuf.message import Message

from keyscope_server.factory import ServerConfig
from tests.rpc_errors import error_info, field_violations, request_id, resource_names

Code = grpc.StatusCode
DELIBERATE = {
    Code.INVALID_ARGUMENT,
    Code.NOT_FOUND,
    Code.PERMISSION_DENIED,
    Code.ALREADY_EXISTS,
    Code.ABORTED,
    Code.OUT_OF_RANGE,
    Code.FAILED_PRECONDITION,
    Code.RESOURCE_EXHAUSTED,
    Code.UNAUTHENTICATED,
}
# The details each code carries besides the RequestInfo (README, "Errors"; ABORTED: the protos' etag rule).
DETAILS_OF: dict[grpc.StatusCode, Callable[[grpc.aio.AioRpcError], object]] = {
    Code.INVALID_ARGUMENT: field_violations,
    Code.UNAUTHENTICATED: error_info,
    Code.PERMISSION_DENIED: error_info,
    Code.OUT_OF_RANGE: error_info,
    Code.ABORTED: error_info,
    Code.NOT_FOUND: resource_names,
    Code.ALREADY_EXISTS: resource_names,
}
# A default gRPC client's grpc.max_metadata_size. Past it, the client drops the answer at random (up to the
# hard limit, 16 KiB, then always) and sees RESOURCE_EXHAUSTED without details. The test's channel accepts more,
# to see what the server sent, and asserts that the error's trailers stay within it.
METADATA_LIMIT = 8192
# The options of such a channel.
WIDE_METADATA = [
    ("grpc.max_metadata_size", 8 * METADATA_LIMIT),
    ("grpc.absolute_max_metadata_size", 8 * METADATA_LIMIT),
]
MAX_MESSAGE_BYTES = ServerConfig().max_message_bytes
SANE_REQUEST_ID = re.compile(r"[\x21-\x7e]{1,128}")  # README: echoed when printable ASCII, no spaces, <= 128
FIELD_PATH_SEGMENT = re.compile(r"([a-z_][a-z0-9_]*)(?:\[(\d+)\])?")


def names_a_field(request: Message, path: str) -> bool:
    """Whether `path` (`scopes[2].value`, `permissions[0]`, `expire_time`) names a field present in `request`."""
    value: Any = request
    for segment in path.split("."):
        match = FIELD_PATH_SEGMENT.fullmatch(segment)
        if match is None or not isinstance(value, Message):
            return False
        field_descriptor = value.DESCRIPTOR.fields_by_name.get(match[1])
        if field_descriptor is None:
            return False
        value = getattr(value, match[1])
        if match[2] is not None:
            if not field_descriptor.is_repeated or int(match[2]) >= len(value):
                return False
            value = value[int(match[2])]
    return True


def check_request_id(trailing_metadata: Any, sent_id: str | None) -> str:
    echoed = dict(trailing_metadata or ()).get("x-request-id")
    assert echoed, "every answer carries an x-request-id trailer"
    if sent_id is not None and SANE_REQUEST_ID.fullmatch(sent_id):
        assert echoed == sent_id
    else:
        assert echoed != sent_id
    return str(echoed)


def trailers_size(error: grpc.aio.AioRpcError) -> int:
    """The bytes an error's trailing metadata takes as a gRPC client counts them against max_metadata_size:
    each entry's name and value plus 32 (grpc-message as sent, percent-encoded; -bin values decoded)."""
    message = (error.details() or "").encode()
    escaped = sum(3 if b < 0x20 or b > 0x7E or b == 0x25 else 1 for b in message)  # %XX
    entries = [("grpc-status", len(str(error.code().value[0]))), ("grpc-message", escaped)]
    entries += [(k, len(v)) for k, v in error.trailing_metadata() or () if k not in ("grpc-status", "grpc-message")]
    return sum(len(key) + length + 32 for key, length in entries)


def check_error(rpc: MethodDescriptor, request: Message, error: grpc.aio.AioRpcError, sent_id: str | None) -> None:
    code = error.code()
    if request.ByteSize() > MAX_MESSAGE_BYTES:
        assert code == Code.RESOURCE_EXHAUSTED, f"{rpc.name} answered {code.name} to a request over the size limit"
        return
    assert code in DELIBERATE, f"{rpc.name} answered {code.name}: {error.details()}"
    size = trailers_size(error)
    assert size <= METADATA_LIMIT, f"{rpc.name}'s {code.name} has {size} bytes of trailers: a default client drops it"
    # request_id() also checks that the details are a google.rpc.Status of the same code.
    assert request_id(error) == check_request_id(error.trailing_metadata(), sent_id)
    detail = DETAILS_OF.get(code)
    if detail is not None:
        assert detail(error), f"{code.name} without its details"
    if code == Code.INVALID_ARGUMENT:
        unknown = [path for path in field_violations(error) if not names_a_field(request, path)]
        assert not unknown, f"BadRequest names fields the request does not have: {unknown}"
