"""VerifyKey's answer, from what the store knows of a key, who asks, and the query."""

from __future__ import annotations

from keyscope.v1 import keys_pb2
from server import access
from server.access import Principal
from server.messages import timestamp
from server.permission_query import Query
from server.store.models import KeyVerification

__all__ = ["verdict"]

Code = keys_pb2.VerifyKeyResponse.Code


def verdict(
    key: KeyVerification | None, caller: Principal, query: Query | None, now_ms: int
) -> keys_pb2.VerifyKeyResponse:
    # A key of an API the caller may not verify is indistinguishable from no key.
    if key is None or not caller.may(access.VERIFY_KEY, key.api_id):
        return keys_pb2.VerifyKeyResponse(valid=False, code=Code.NOT_FOUND)
    response = keys_pb2.VerifyKeyResponse(
        key_id=key.key_id, api_id=key.api_id, permissions=key.permissions, roles=key.roles
    )
    if key.expires_ms is not None:
        response.expire_time.CopyFrom(timestamp(key.expires_ms))
    if not key.enabled:
        response.code = Code.DISABLED
    elif key.expires_ms is not None and key.expires_ms <= now_ms:
        response.code = Code.EXPIRED
    elif query is not None and (missing := query.missing(key.permissions)):
        response.code = Code.INSUFFICIENT_PERMISSIONS
        response.missing_permissions.extend(missing)
    else:
        response.code = Code.VALID
        response.valid = True
    return response
