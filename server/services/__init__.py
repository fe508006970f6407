"""One servicer per keyscope.v1 service: validate, one store call, build the response."""

from server.services.apis import ApiService
from server.services.audit import AuditService
from server.services.keys import KeyService
from server.services.roles import RoleService

__all__ = ["ApiService", "AuditService", "KeyService", "RoleService"]
