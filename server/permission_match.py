"""Whether a granted permission covers a required one.

Names are split on `.`; a granted segment that is exactly `*` matches any one
segment of the required name, every other segment compares exactly and
case-sensitively, and the two names must have as many segments. So
`api.*.update_key` grants `api.api_1.update_key`, and `documents.*` grants
`documents.read` but not `documents.read.own`. Root keys and VerifyKey use the
same rule.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["grants", "is_granted"]

WILDCARD = "*"


def grants(granted: str, required: str) -> bool:
    """True if holding `granted` satisfies a need for `required`."""
    if granted == required:
        return True
    if WILDCARD not in granted:
        return False
    have = granted.split(".")
    need = required.split(".")
    if len(have) != len(need):
        return False
    return all(h == WILDCARD or h == n for h, n in zip(have, need, strict=True))


def is_granted(held: Iterable[str], required: str) -> bool:
    """True if any permission in `held` grants `required`."""
    return any(grants(granted, required) for granted in held)
