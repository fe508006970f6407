"""Reading the google.rpc details of a failed call."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2

from keyscope_server.store import Store


async def rejected(store: Store, call: Callable[[], Awaitable[object]], code: grpc.StatusCode) -> grpc.aio.AioRpcError:
    """Runs `call()`, which must fail with `code` and leave the store exactly as it was (its logical snapshot:
    every row, the revision, the change log and the audit trail); returns the error.

    `call` is a zero-argument callable so the snapshot is taken before the request is sent.
    """
    before = await store.export_snapshot()
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await call()
    assert e.value.code() == code
    assert await store.export_snapshot() == before
    return e.value


def _details(error: grpc.aio.AioRpcError) -> list:
    for key, value in error.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            status = status_pb2.Status.FromString(value)
            assert status.code == error.code().value[0]
            out = []
            for detail in status.details:
                for cls in (
                    error_details_pb2.BadRequest,
                    error_details_pb2.ErrorInfo,
                    error_details_pb2.ResourceInfo,
                    error_details_pb2.RequestInfo,
                    error_details_pb2.RetryInfo,
                ):
                    if detail.Is(cls.DESCRIPTOR):
                        message = cls()
                        detail.Unpack(message)
                        out.append(message)
            return out
    raise AssertionError(f"no rich status details in {error!r}")


def field_violations(error: grpc.aio.AioRpcError) -> dict[str, str]:
    """BadRequest field -> description."""
    [bad] = [d for d in _details(error) if isinstance(d, error_details_pb2.BadRequest)]
    return {v.field: v.description for v in bad.field_violations}


def error_info(error: grpc.aio.AioRpcError) -> error_details_pb2.ErrorInfo:
    [info] = [d for d in _details(error) if isinstance(d, error_details_pb2.ErrorInfo)]
    return info


def resource_names(error: grpc.aio.AioRpcError) -> list[str]:
    return [d.resource_name for d in _details(error) if isinstance(d, error_details_pb2.ResourceInfo)]


def retry_delay(error: grpc.aio.AioRpcError) -> float:
    """google.rpc.RetryInfo's delay, in seconds."""
    [info] = [d for d in _details(error) if isinstance(d, error_details_pb2.RetryInfo)]
    return float(info.retry_delay.seconds + info.retry_delay.nanos / 1e9)


def request_id(error: grpc.aio.AioRpcError) -> str:
    [info] = [d for d in _details(error) if isinstance(d, error_details_pb2.RequestInfo)]
    return info.request_id


def blanked_answer(error: grpc.aio.AioRpcError, *ids: str) -> tuple[grpc.StatusCode, str, list[str]]:
    """What a caller learns from an error (code, message, resource names), with `ids` blanked out.

    Equal for a resource the caller may not see and one that does not exist, so ids cannot be probed.
    """

    def blank(text: str) -> str:
        for id_ in ids:
            text = text.replace(id_, "<id>")
        return text

    return error.code(), blank(error.details() or ""), [blank(name) for name in resource_names(error)]
