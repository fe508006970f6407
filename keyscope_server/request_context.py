"""Per-call context: the request id and the authenticated caller (set by the interceptor), and VerifyKey's outcome
(set by its servicer, for the access log and the metrics)."""

from __future__ import annotations

import contextvars

from keyscope_server.access import Principal

__all__ = ["current_principal", "principal_var", "request_id_var", "verify_outcome_var"]

request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")
principal_var: contextvars.ContextVar[Principal | None] = contextvars.ContextVar("principal", default=None)
# Each call runs in a task of its own, which starts with a copy of a context where this is unset: no call sees
# another's outcome.
verify_outcome_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("verify_outcome", default=None)


def current_principal() -> Principal:
    principal = principal_var.get()
    if principal is None:  # the interceptor authenticates every Keyscope call first
        raise RuntimeError("no authenticated caller in this context")
    return principal
