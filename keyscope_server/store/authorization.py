"""May this caller act on this resource, and is the etag it sent still the resource's? Checked inside the
transaction that does the work, so that the check and the change see the same state."""

from __future__ import annotations

import time
from collections.abc import Sequence

from keyscope_server import access
from keyscope_server.access import Principal
from keyscope_server.errors import EtagMismatch, NotFound, RevisionNotReached
from keyscope_server.store.engine import Current, S, Tables
from keyscope_server.store.states import KeyState, RoleState

__all__ = ["authorize_api", "authorize_key", "authorize_role", "etag_of", "now_ms", "require_revision"]


def now_ms() -> int:
    return int(time.time() * 1000)


def etag_of(revision: int) -> str:
    """A resource's etag: opaque to callers, made of the revision at which the resource last changed."""
    return f"r{revision}"


def require_revision(current: int, min_revision: int) -> None:
    """A read's snapshot must be at `min_revision` or later."""
    if current < min_revision:
        raise RevisionNotReached(min_revision, current)


def _current_etag(kind: str, row_id: str, etag_revision: int, sent: str) -> str:
    # Checked after authorization: a caller that may not act on a resource learns nothing of its etag.
    current = etag_of(etag_revision)
    if sent and sent != current:
        raise EtagMismatch(kind, row_id, sent, current)
    return current


async def authorize_api(
    tx: Tables, principal: Principal, action: access.Action, api_id: str, sent_etag: str = ""
) -> str:
    """The API's etag, once the caller may act on the API (and `sent_etag`, if any, is still its etag)."""
    hidden = NotFound("api", [api_id])
    etag_revision = await tx.apis.etag_revision(api_id)
    if etag_revision is None:
        raise hidden
    principal.authorize(action, api_id, hidden)
    return _current_etag("api", api_id, etag_revision, sent_etag)


async def authorize_key(
    tx: Tables,
    principal: Principal,
    action: access.Action,
    key_id: str,
    sent_etag: str = "",
    permission_names: Sequence[str] = (),
) -> Current[KeyState]:
    """The key as it is, once the caller may act on it (and `sent_etag`, if any, is still its etag); read with
    it, the named entries of its API's catalog that exist (KeyTable.current)."""
    current = await tx.keys.current(key_id, permission_names)
    return _authorize_in_api(current, "key", principal, action, key_id, sent_etag)


async def authorize_role(
    tx: Tables,
    principal: Principal,
    action: access.Action,
    role_id: str,
    sent_etag: str = "",
    permission_names: Sequence[str] = (),
) -> Current[RoleState]:
    """As authorize_key, for a role."""
    current = await tx.roles.current(role_id, permission_names)
    return _authorize_in_api(current, "role", principal, action, role_id, sent_etag)


def _authorize_in_api(
    current: Current[S] | None, kind: str, principal: Principal, action: access.Action, row_id: str, sent: str
) -> Current[S]:
    hidden = NotFound(kind, [row_id])
    if current is None:
        raise hidden
    principal.authorize(action, current.api_id, hidden)
    _current_etag(kind, row_id, current.etag_revision, sent)
    return current
