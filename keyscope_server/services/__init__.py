"""One servicer per keyscope.v1 service: validate, one store call, build the response."""

from keyscope_server.services.apis import ApiService
from keyscope_server.services.audit import AuditService
from keyscope_server.services.keys import KeyService
from keyscope_server.services.roles import RoleService

__all__ = ["ApiService", "AuditService", "KeyService", "RoleService"]
