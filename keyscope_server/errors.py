"""Domain errors: what can go wrong, in the service's own words.

The store and the servicers raise these; `keyscope_server.status` alone turns them into
gRPC status codes and details. Messages are written for the caller and never
carry a secret.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "AUTHENTICATION_FAILURES",
    "AlreadyExists",
    "DomainError",
    "EtagMismatch",
    "FieldViolation",
    "InvalidArgument",
    "NotFound",
    "PermissionDenied",
    "RevisionNotReached",
    "ServerStopping",
    "StoreFull",
    "StoreUnavailable",
    "Throttled",
    "Unauthenticated",
]


# The ways a root key fails to authenticate, as Unauthenticated.reason names them.
AUTHENTICATION_FAILURES = ("missing", "malformed", "unknown", "disabled", "expired")


class DomainError(Exception):
    """Base of every error a caller is meant to see."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __reduce__(self) -> tuple[Any, ...]:
        # Errors cross from the store's writer process pickled; rebuilt as they are, whatever __init__ takes.
        return (_rebuilt, (type(self), self.args, self.__dict__))


def _rebuilt(cls: type[DomainError], args: tuple[Any, ...], state: dict[str, Any]) -> DomainError:
    error = cls.__new__(cls, *args)
    error.args = args
    error.__dict__.update(state)
    return error


@dataclass(frozen=True)
class FieldViolation:
    """One bad field of a request, named as in the proto (`scopes[2].value`)."""

    field: str
    description: str


class InvalidArgument(DomainError):
    def __init__(self, violations: Sequence[FieldViolation]) -> None:
        self.violations = tuple(violations)
        first = self.violations[0]
        more = f" (and {len(self.violations) - 1} more)" if len(self.violations) > 1 else ""
        super().__init__(f"invalid {first.field}: {first.description}{more}")


class Unauthenticated(DomainError):
    """`reason`, one of AUTHENTICATION_FAILURES, says which way the credentials failed (metrics count by it)."""

    def __init__(self, message: str, *, reason: str) -> None:
        self.reason = reason
        super().__init__(message)


class PermissionDenied(DomainError):
    """The caller lacks `permission`; `subjects` lists what it was needed for."""

    def __init__(
        self,
        permission: str,
        *,
        reason: str = "MISSING_PERMISSION",
        subjects: Sequence[str] = (),
        message: str | None = None,
    ) -> None:
        self.permission = permission
        self.reason = reason
        self.subjects = tuple(subjects)
        super().__init__(message or f"the root key lacks the permission {permission}")


class NotFound(DomainError):
    """`resource_type` names (ids or names) that do not exist, or that the caller may not see."""

    def __init__(self, resource_type: str, names: Sequence[str]) -> None:
        self.resource_type = resource_type
        self.names = tuple(names)
        super().__init__(f"{resource_type} not found: {', '.join(self.names)}")


class AlreadyExists(DomainError):
    def __init__(self, resource_type: str, name: str) -> None:
        self.resource_type = resource_type
        self.name = name
        super().__init__(f"{resource_type} already exists: {name}")


class RevisionNotReached(DomainError):
    """A read asked for a store revision (`min_revision`) newer than the store has."""

    def __init__(self, requested: int, current: int) -> None:
        self.requested = requested
        self.current = current
        super().__init__(f"min_revision {requested} is ahead of the store, which is at revision {current}")


class EtagMismatch(DomainError):
    """A write named the etag the caller last read, and the resource has changed since."""

    def __init__(self, resource_type: str, resource_id: str, sent: str, current: str) -> None:
        self.resource_type = resource_type
        self.resource_id = resource_id
        self.current = current
        super().__init__(
            f"the {resource_type} {resource_id} has changed since etag {sent} was read (its etag is now "
            f"{current}): read it again, then retry"
        )


class ServerStopping(DomainError):
    """The server is shutting down and takes no new call; another instance (or this one, restarted) will."""

    def __init__(self) -> None:
        super().__init__("the server is stopping and takes no new calls; retry, another instance will answer")


class StoreFull(DomainError):
    """The store has no room for a write (disk full, or the database at its size limit); reads still work."""

    def __init__(self) -> None:
        super().__init__("the store is full: nothing was written; free space or raise the limit, then retry")


class MessageTooLarge(DomainError):
    """A request larger than the server takes (`--max-message-bytes`)."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"the request is {size} bytes, over the server's limit of {limit} bytes: nothing was changed")
        self.limit = limit


class StoreUnavailable(DomainError):
    """The store cannot be reached or used right now; retrying later may work."""

    def __init__(self, message: str = "the store is unavailable, try again later") -> None:
        super().__init__(message)


class Throttled(DomainError):
    """Too many failures that each cost a store lookup (`reason` says which kind); `retry_after` seconds from now,
    a call that needs such a lookup is taken again."""

    def __init__(self, reason: str, what: str, retry_after: float) -> None:
        self.reason = reason
        self.retry_after = retry_after
        super().__init__(f"too many {what}; retry in {retry_after:.3f}s")
