"""VerifyKey's answer, from what the store knows of a key and the query."""

from __future__ import annotations

from keyscope.v1 import keys_pb2
from keyscope_server.messages import timestamp
from keyscope_server.permission_query import Query
from keyscope_server.store.models import KeyVerification

__all__ = ["OUTCOMES", "verdict"]

Response = keys_pb2.VerifyKeyResponse
# Each answer code as logs and metrics name it: CODE_VALID is "VALID".
OUTCOMES: dict[int, str] = {value: name.removeprefix("CODE_") for name, value in Response.Code.items()}


def verdict(key: KeyVerification | None, query: Query | None, now_ms: int) -> keys_pb2.VerifyKeyResponse:
    """`key`: None when there is no such key, or the caller may not verify keys of its API (the store decides)."""
    if key is None:
        return Response(valid=False, code=Response.CODE_NOT_FOUND)
    missing: list[str] = []
    if not key.enabled:
        code = Response.CODE_DISABLED
    elif key.expires_ms is not None and key.expires_ms <= now_ms:
        code = Response.CODE_EXPIRED
    elif query is not None and (missing := query.missing(key.held)):
        code = Response.CODE_INSUFFICIENT_PERMISSIONS
    else:
        code = Response.CODE_VALID
    return Response(
        valid=code == Response.CODE_VALID,
        code=code,
        key_id=key.key_id,
        api_id=key.api_id,
        permissions=key.permissions,
        roles=key.roles,
        missing_permissions=missing,
        expire_time=None if key.expires_ms is None else timestamp(key.expires_ms),
    )
