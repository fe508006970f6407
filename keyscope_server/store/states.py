"""A resource as its audit events describe it: names, flags and grants, never a secret (audit.proto lists the
shapes). Engines read these; `as_event` turns one into the JSON shape that the audit trail keeps."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

__all__ = ["ApiState", "KeyState", "RoleState", "RootKeyState", "State"]

State = dict[str, Any]


def _rfc3339(ms: int | None) -> str | None:
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class ApiState:
    name: str
    scopes: tuple[tuple[str, str], ...]  # (value, description)

    def as_event(self) -> State:
        return {"name": self.name, "scopes": [{"value": v, "description": d} for v, d in sorted(self.scopes)]}


@dataclass(frozen=True)
class KeyState:
    name: str
    enabled: bool
    expires_ms: int | None
    permissions: tuple[str, ...]  # direct permissions' names
    roles: tuple[str, ...]  # role names

    def as_event(self) -> State:
        return {
            "name": self.name,
            "enabled": self.enabled,
            "expire_time": _rfc3339(self.expires_ms),
            "permissions": sorted(self.permissions),
            "roles": sorted(self.roles),
        }


@dataclass(frozen=True)
class RoleState:
    name: str
    description: str
    permissions: tuple[str, ...]

    def as_event(self) -> State:
        return {"name": self.name, "description": self.description, "permissions": sorted(self.permissions)}


@dataclass(frozen=True)
class RootKeyState:
    name: str
    enabled: bool
    expires_ms: int | None
    permissions: tuple[str, ...]

    def as_event(self) -> State:
        return {
            "name": self.name,
            "enabled": self.enabled,
            "expire_time": _rfc3339(self.expires_ms),
            "permissions": sorted(self.permissions),
        }
