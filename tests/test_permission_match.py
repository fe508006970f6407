"""keyscope_server.permission_match: one rule for root keys and VerifyKey. `*` is a whole segment matching any one
segment."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keyscope_server.permission_match import PermissionSet, grants
from keyscope_server.permission_query import parse_query

OK = [
    ("documents.read", "documents.read"),
    ("api.*.update_key", "api.api_123.update_key"),
    ("api.*.create_api", "api.*.create_api"),  # CreateApi's own requirement is spelled with a literal `*`
    ("documents.*", "documents.read"),
    ("*.read", "documents.read"),
    ("*.*", "documents.read"),
    ("*", "admin"),
    ("*", "*"),
    ("api.*.*", "api.api_1.read_key"),
    ("read:users", "read:users"),
    ("doc*", "doc*"),  # identical strings match even when they hold a star
    ("a-b.c_d:e", "a-b.c_d:e"),
    # The pattern allows empty segments, and `*` matches one segment, even an empty one.
    ("documents.*", "documents."),
    ("*.read", ".read"),
]


@pytest.mark.parametrize(("granted", "required"), OK)
def test_ok_grants(granted: str, required: str) -> None:
    assert grants(granted, required)


DENIED = [
    # Segment counts must match: a wildcard is one segment, never more or fewer.
    ("documents.*", "documents.read.own"),
    ("documents.*", "documents"),
    ("*", "documents.read"),
    ("*.*", "a.b.c"),
    ("api.*.update_key", "api.update_key"),
    ("api.*.update_key", "api.a.b.update_key"),
    ("documents.read", "documents.read.own"),
    ("documents.read.own", "documents.read"),
    # Exact and case-sensitive comparison of every other segment.
    ("documents.read", "documents.write"),
    ("documents.read", "Documents.read"),
    ("documents.READ", "documents.read"),
    ("API.*.update_key", "api.api_1.update_key"),
    ("api.*.update_key", "api.api_1.delete_key"),
    ("api.*.update_key", "api.api_1.Update_Key"),
    # `*` is special only as a whole segment: `doc*` is a literal name.
    ("doc*", "documents"),
    ("doc*", "doc"),
    ("documents.re*", "documents.read"),
    ("*ocuments.read", "documents.read"),
    ("api.**.update_key", "api.api_1.update_key"),
    # A star in the *required* name is literal: it does not widen what is granted.
    ("documents.read", "documents.*"),
    ("api.api_1.create_api", "api.*.create_api"),
    ("", "documents"),
    ("documents", ""),
]


@pytest.mark.parametrize(("granted", "required"), DENIED)
def test_denied_grants(granted: str, required: str) -> None:
    assert not grants(granted, required)


@pytest.mark.parametrize(
    ("held", "required", "expected"),
    [
        ((), "documents.read", False),
        (("documents.write",), "documents.read", False),
        (("documents.write", "documents.read"), "documents.read", True),
        (("documents.write", "documents.*"), "documents.read", True),
        (("documents.*", "documents.read.*"), "documents.read.own", True),
        (("documents.*", "Documents.read"), "documents.read.own", False),
        (["api.*.verify_key"], "api.api_9.verify_key", True),
    ],
)
def test_permission_set_is_any_of_held(held: tuple[str, ...], required: str, expected: bool) -> None:
    assert PermissionSet(held).grants(required) is expected


def test_permission_set_accepts_a_one_shot_iterable() -> None:
    # Callers may pass generators; one pass must be enough.
    held = (p for p in ["a.b", "c.*"])
    assert PermissionSet(held).grants("c.d")


# -- PermissionSet: the same rule, compiled once for many checks -------------------------------------------


@pytest.mark.parametrize(("granted", "required"), OK)
def test_ok_permission_set_grants(granted: str, required: str) -> None:
    assert PermissionSet([granted, "unrelated.name", "other.*.pattern"]).grants(required)


@pytest.mark.parametrize(("granted", "required"), DENIED)
def test_denied_permission_set_grants(granted: str, required: str) -> None:
    assert not PermissionSet([granted, "unrelated.name", "other.*.pattern"]).grants(required)


NAMES = st.text(alphabet="ab.*", max_size=7)


@settings(max_examples=400, derandomize=True)
@given(held=st.lists(NAMES, max_size=6), required=NAMES)
def test_permission_set_agrees_with_the_scan(held: list[str], required: str) -> None:
    # Short names over a few characters reach the edges: empty segments, stars inside segments, `*` required.
    expected = any(grants(granted, required) for granted in held)
    assert PermissionSet(held).grants(required) is expected
    assert (parse_query("b").missing(PermissionSet(held)) == []) is any(grants(granted, "b") for granted in held)
