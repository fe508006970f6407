"""Who is calling, and what root-key permissions each action needs.

Root-key permissions are named as Unkey names them: `api.<api_id>.<verb>` and
`rbac.<api_id>.<verb>`, with `*` for any API (see keyscope_server.permission_match).
A caller that lacks the permission an action needs gets PERMISSION_DENIED only
if it may at least read the resource; otherwise the resource is NOT_FOUND to
it, so ids of other APIs' resources cannot be probed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

from keyscope_server.errors import NotFound, PermissionDenied
from keyscope_server.permission_match import PermissionSet, permission_set

__all__ = ["Action", "Principal", "CREATE_API", "CLI"]

CREATE_API = "api.*.create_api"


@dataclass(frozen=True)
class Action:
    """An action on the resources of one API, and the permissions that let a caller see them."""

    namespace: str
    verb: str
    visible_with: tuple[tuple[str, str], ...] = ()

    def permission(self, api_id: str) -> str:
        return f"{self.namespace}.{api_id}.{self.verb}"

    def visibility(self, api_id: str) -> list[str]:
        return [f"{namespace}.{api_id}.{verb}" for namespace, verb in self.visible_with]


_SEE_API = (("api", "read_api"),)
_SEE_KEYS = (("api", "read_key"),)
_SEE_ROLES = (("rbac", "read_role"),)

READ_API = Action("api", "read_api", _SEE_API)
UPDATE_API = Action("api", "update_api", _SEE_API)
DELETE_API = Action("api", "delete_api", _SEE_API)
CREATE_KEY = Action("api", "create_key", _SEE_API + _SEE_KEYS)
READ_KEY = Action("api", "read_key", _SEE_KEYS)
LIST_KEYS = Action("api", "read_key", _SEE_API + _SEE_KEYS)  # of an API: one that may read the API learns why not
UPDATE_KEY = Action("api", "update_key", _SEE_KEYS)
DELETE_KEY = Action("api", "delete_key", _SEE_KEYS)
VERIFY_KEY = Action("api", "verify_key")
CREATE_PERMISSION = Action("rbac", "create_permission")
CREATE_ROLE = Action("rbac", "create_role", _SEE_API + _SEE_ROLES)
READ_ROLE = Action("rbac", "read_role", _SEE_ROLES)
UPDATE_ROLE = Action("rbac", "update_role", _SEE_ROLES)
DELETE_ROLE = Action("rbac", "delete_role", _SEE_ROLES)
LIST_ROLES = Action("rbac", "read_role", _SEE_API + _SEE_ROLES)
READ_EVENTS = Action("audit", "read_events")


@dataclass(frozen=True)
class Principal:
    """An authenticated root key: its id (safe to log and audit), its permissions, and the request it makes."""

    root_key_id: str
    permissions: tuple[str, ...]
    request_id: str = ""
    # When (time.monotonic()) the store's freshness check made at authentication began: the store has seen every
    # commit acknowledged before then, so the call needs no second check. None: not known, check.
    checked_since: float | None = field(default=None, compare=False)

    @cached_property
    def held(self) -> PermissionSet:
        return permission_set(self.permissions)

    def allows(self, required: str) -> bool:
        return self.held.grants(required)

    def may(self, action: Action, api_id: str) -> bool:
        return self.allows(action.permission(api_id))

    def authorize(self, action: Action, api_id: str, hidden: NotFound) -> None:
        """Pass, or raise PermissionDenied, or `hidden` if the caller may not even see the resource."""
        required = action.permission(api_id)
        if self.allows(required):
            return
        if any(self.allows(p) for p in action.visibility(api_id)):
            raise PermissionDenied(required)
        raise hidden

    def require(self, permission: str) -> None:
        """For actions on no existing resource (CreateApi): pass or PermissionDenied."""
        if not self.allows(permission):
            raise PermissionDenied(permission)


# The administration commands of `python -m keyscope_server` (root keys), as the audit trail names their actor.
CLI = Principal("cli", ())
