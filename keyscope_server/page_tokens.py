"""Opaque page tokens (AIP-158): where the next page starts, bound to the filters of the request that made it.

A token is not a secret and not a credential: each page is authorized on its
own. Binding it to the filters lets a token sent with other filters be refused
rather than silently give a wrong page.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Sequence

__all__ = ["decode", "encode"]

MAX_POSITION = 2**63 - 1  # positions are revisions: 64-bit integers in both engines


def _fingerprint(filters: Sequence[object]) -> str:
    return hashlib.sha256(json.dumps(list(filters)).encode()).hexdigest()[:16]


def encode(position: int, filters: Sequence[object]) -> str:
    payload = json.dumps({"p": position, "f": _fingerprint(filters)}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(payload).decode().rstrip("=")


def decode(token: str, filters: Sequence[object]) -> int:
    """The position `encode` put in the token; ValueError if it is not a token of a request with `filters`."""
    try:
        payload = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    except (binascii.Error, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError("not a page token") from exc
    position = payload.get("p") if isinstance(payload, dict) else None
    if not isinstance(position, int) or isinstance(position, bool) or not 1 <= position <= MAX_POSITION:
        raise ValueError("not a page token")
    if payload.get("f") != _fingerprint(filters):
        raise ValueError("the page token belongs to a request with other filters")
    return position
