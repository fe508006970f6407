"""Whether a root key, as the store knows it, may act now."""

from __future__ import annotations

from server.access import Principal
from server.errors import Unauthenticated
from server.store.models import RootKeyGrant

__all__ = ["admit"]


def admit(grant: RootKeyGrant | None, now_ms: int, request_id: str = "") -> Principal:
    """The caller a root key makes for the request `request_id`, if it may act now; otherwise Unauthenticated."""
    if grant is None:
        raise Unauthenticated("unknown root key")
    if not grant.enabled:
        raise Unauthenticated("the root key is disabled")
    if grant.expires_ms is not None and grant.expires_ms <= now_ms:
        raise Unauthenticated("the root key has expired")
    return Principal(grant.id, grant.permissions, request_id)
