"""keyscope_server.page_tokens.PageTokens: a token decodes to its position with the key and filters that made it,
and any other token (forged, altered, of another key or other filters, out of range) is a ValueError."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json

import pytest

from keyscope_server.page_tokens import MAX_POSITION, PageTokens

KEY = bytes(range(32))
FILTERS = ("api_1", "", "", "", None, None)


def _signed(payload: object, key: bytes = KEY) -> str:
    """A token as a server with `key` would sign it, whatever its payload."""
    raw = json.dumps(payload, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw + hmac.new(key, raw, hashlib.sha256).digest()[:16]).decode().rstrip("=")


def _fingerprint() -> str:
    return json.loads(base64.urlsafe_b64decode(PageTokens(KEY).encode(1, FILTERS) + "==")[:-16])["f"]


@pytest.mark.parametrize("position", [1, 42, MAX_POSITION])
def test_ok_round_trip(position: int) -> None:
    tokens = PageTokens(KEY)
    assert tokens.decode(tokens.encode(position, FILTERS), FILTERS) == position


def test_ok_same_key_same_tokens_on_every_server() -> None:
    assert PageTokens(KEY).decode(PageTokens(bytes(KEY)).encode(7, FILTERS), FILTERS) == 7


def test_ok_key_not_in_repr() -> None:
    assert KEY.hex() not in repr(PageTokens(KEY)) and str(KEY) not in repr(PageTokens(KEY))


@pytest.mark.parametrize(
    "token",
    [
        "",
        "garbage",
        "!!!",
        base64.urlsafe_b64encode(b'{"p":5,"f":"0000000000000000"}').decode(),  # unsigned
        _signed({"p": 5, "f": "x"}, key=b"another key"),  # signed with another store's key
    ],
    ids=["empty", "garbage", "not base64", "unsigned", "another key"],
)
def test_value_error_not_a_token_of_this_key(token: str) -> None:
    with pytest.raises(ValueError, match="not a page token"):
        PageTokens(KEY).decode(token, FILTERS)


def test_value_error_altered_token() -> None:
    token = PageTokens(KEY).encode(5, FILTERS)
    raw = base64.urlsafe_b64decode(token + "==")
    for at in range(len(token)):
        altered = token[:at] + ("A" if token[at] != "A" else "B") + token[at + 1 :]
        if base64.urlsafe_b64decode(altered + "==") == raw:
            continue  # a change of padding bits only: the same token
        with pytest.raises(ValueError):
            PageTokens(KEY).decode(altered, FILTERS)


def test_value_error_other_filters() -> None:
    token = PageTokens(KEY).encode(5, FILTERS)
    with pytest.raises(ValueError, match="other filters"):
        PageTokens(KEY).decode(token, ("api_2", "", "", "", None, None))


@pytest.mark.parametrize("position", [0, -1, MAX_POSITION + 1, 10**40, 1.5, True, "5", None])
def test_value_error_signed_position_out_of_range(position: object) -> None:
    # Only a server holding the key can make these; refused all the same, never used in a query.
    with pytest.raises(ValueError, match="not a page token"):
        PageTokens(KEY).decode(_signed({"p": position, "f": _fingerprint()}), FILTERS)
