"""Per-call context set by the interceptor: the request id and the authenticated caller."""

from __future__ import annotations

import contextvars

from keyscope_server.access import Principal

__all__ = ["current_principal", "principal_var", "request_id_var"]

request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")
principal_var: contextvars.ContextVar[Principal | None] = contextvars.ContextVar("principal", default=None)


def current_principal() -> Principal:
    principal = principal_var.get()
    if principal is None:  # the interceptor authenticates every Keyscope call first
        raise RuntimeError("no authenticated caller in this context")
    return principal
