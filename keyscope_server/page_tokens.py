"""Opaque page tokens (AIP-158): where the next page starts, bound to the filters of the request that made it,
and signed by the server.

A token is not a secret and not a credential: each page is authorized on its
own. Binding it to the filters lets a token sent with other filters be refused
rather than silently give a wrong page; the signature (HMAC-SHA256, cut to 16
bytes) lets a forged or altered token be refused (INVALID_ARGUMENT) before
anything in it is used. The key is the store's (`Store.page_token_key`), so
that every server on one database accepts the tokens of the others.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from collections.abc import Sequence

__all__ = ["MAX_NAME_POSITION", "MAX_POSITION", "PageTokens"]

MAX_POSITION = 2**63 - 1  # revisions, as positions: 64-bit integers in both engines
MAX_NAME_POSITION = 300  # ids and names, as positions: characters (ids and names are at most 280)
_MAC_BYTES = 16


def _fingerprint(filters: Sequence[object]) -> str:
    return hashlib.sha256(json.dumps(list(filters)).encode()).hexdigest()[:16]


class PageTokens:
    def __init__(self, key: bytes) -> None:
        self._key = key

    def __repr__(self) -> str:
        return "PageTokens(...)"  # never the key

    def _mac(self, payload: bytes) -> bytes:
        return hmac.new(self._key, payload, hashlib.sha256).digest()[:_MAC_BYTES]

    def encode(self, position: int | str, filters: Sequence[object]) -> str:
        payload = json.dumps({"p": position, "f": _fingerprint(filters)}, separators=(",", ":")).encode()
        return base64.urlsafe_b64encode(payload + self._mac(payload)).decode().rstrip("=")

    def decode(self, token: str, filters: Sequence[object]) -> int:
        """The revision `encode` put in the token; ValueError if this server's store did not make it, or made it
        for a request with other filters."""
        position = self._open(token, filters)
        if not isinstance(position, int) or isinstance(position, bool) or not 1 <= position <= MAX_POSITION:
            raise ValueError("not a page token")
        return position

    def decode_name(self, token: str, filters: Sequence[object]) -> str:
        """As `decode`, for a list ordered by id or name: the id or name `encode` put in the token."""
        position = self._open(token, filters)
        if not isinstance(position, str) or not 1 <= len(position) <= MAX_NAME_POSITION:
            raise ValueError("not a page token")
        return position

    def _open(self, token: str, filters: Sequence[object]) -> object:
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        except (binascii.Error, ValueError) as exc:
            raise ValueError("not a page token") from exc
        payload, mac = raw[:-_MAC_BYTES], raw[-_MAC_BYTES:]
        if len(raw) <= _MAC_BYTES or not hmac.compare_digest(mac, self._mac(payload)):
            raise ValueError("not a page token")
        try:
            fields = json.loads(payload)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:  # signed, so not expected: made by another version
            raise ValueError("not a page token") from exc
        if not isinstance(fields, dict):
            raise ValueError("not a page token")
        if fields.get("f") != _fingerprint(filters):
            raise ValueError("the page token belongs to a request with other filters")
        return fields.get("p")
