"""Ids, key secrets and their hashes.

A secret is `<prefix>_<32 random alphanumerics>` (about 190 bits) or the random
part alone; only its SHA-256 digest is stored. Ids are public and unguessable
only as a courtesy; access is decided by permissions, never by knowing an id.
"""

from __future__ import annotations

import hashlib
import secrets
import string

__all__ = ["ROOT_KEY_PREFIX", "hash_secret", "new_id", "new_secret", "secret_start"]

_ALPHABET = string.ascii_letters + string.digits
_SECRET_LENGTH = 32
_ID_LENGTH = 16
_START_LENGTH = 4
ROOT_KEY_PREFIX = "ksroot"


def _random(length: int) -> str:
    return "".join(secrets.choice(_ALPHABET) for _ in range(length))


def new_id(kind: str) -> str:
    """A new id such as `key_7QmWd1cXg9TzLr2A`."""
    return f"{kind}_{_random(_ID_LENGTH)}"


def new_secret(prefix: str = "") -> str:
    body = _random(_SECRET_LENGTH)
    return f"{prefix}_{body}" if prefix else body


def secret_start(secret: str, prefix: str = "") -> str:
    """What may be shown of a secret: its prefix and a few characters."""
    return secret[: len(prefix) + 1 + _START_LENGTH] if prefix else secret[:_START_LENGTH]


def hash_secret(secret: str) -> bytes:
    return hashlib.sha256(secret.encode("utf-8")).digest()
