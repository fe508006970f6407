"""Whether a granted permission covers a required one.

Names are split on `.`; a granted segment that is exactly `*` matches any one
segment of the required name, every other segment compares exactly and
case-sensitively, and the two names must have as many segments. So
`api.*.update_key` grants `api.api_1.update_key`, and `documents.*` grants
`documents.read` but not `documents.read.own`. Root keys and VerifyKey use the
same rule.

`PermissionSet` applies the rule to what one key holds, compiled once: a
required name is looked up among the exact names, then matched against one
regular expression made of the key's patterns (`*` as `[^.]*`). Keys and root
keys keep theirs for as long as they are cached, so a check on the hot path
costs a set lookup and at most one match.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import lru_cache

__all__ = ["PermissionSet", "grants", "permission_set"]

WILDCARD = "*"
SMALL = 8  # names held, up to which they are looked up in their tuple


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


class PermissionSet:
    """Permissions held together: `grants(required)` is whether any of them `grants` it, without a scan."""

    __slots__ = ("_exact", "_patterns")

    def __init__(self, held: Iterable[str]) -> None:
        # A few names are looked up in a tuple as fast as in a set, and the key's own tuple costs no memory: a
        # frozenset of five names takes about 700 bytes, in every one of up to 100k cached keys.
        self._exact: tuple[str, ...] | frozenset[str] = (
            held if isinstance(held, tuple) and len(held) <= SMALL else frozenset(held)
        )
        patterns = sorted(_pattern(granted) for granted in set(self._exact) if WILDCARD in granted)
        self._patterns = re.compile("|".join(patterns)) if patterns else None

    def grants(self, required: str) -> bool:
        if required in self._exact:
            return True
        return self._patterns is not None and self._patterns.fullmatch(required) is not None


def _pattern(granted: str) -> str:
    """`grants` as a regular expression: a `*` segment is any one segment, every other one itself."""
    return r"\.".join("[^.]*" if segment == WILDCARD else re.escape(segment) for segment in granted.split("."))


@lru_cache(maxsize=1024)
def permission_set(held: tuple[str, ...]) -> PermissionSet:
    """The compiled set of `held`, shared by every holder of the same tuple (root keys: one per request)."""
    return PermissionSet(held)
