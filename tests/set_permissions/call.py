"""The SetPermissions call, and the key's direct permissions as GetKey reads them back."""

from __future__ import annotations

from collections.abc import Sequence

from keyscope.v1 import keys_pb2
from tests.client import Caller

__all__ = ["direct_names", "set_permissions"]


async def set_permissions(caller: Caller, key_id: str, permissions: Sequence[str]) -> keys_pb2.SetPermissionsResponse:
    return await caller.keys.SetPermissions(
        keys_pb2.SetPermissionsRequest(key_id=key_id, permissions=permissions), metadata=caller.md
    )


async def direct_names(caller: Caller, key_id: str) -> list[str]:
    return [p.name for p in (await caller.get_key(key_id)).permissions]
