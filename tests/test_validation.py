"""keyscope_server.validation.Validator: every rule, field names as in the proto, all violations reported at once."""

from __future__ import annotations

import pytest

from keyscope_server.errors import FieldViolation, InvalidArgument
from keyscope_server.validation import MAX_LIST, ScopeSpec, Validator


def violations(check: Validator) -> dict[str, str]:
    """field -> description of what `check` recorded; {} if it would pass."""
    try:
        check.done()
    except InvalidArgument as exc:
        fields = [v.field for v in exc.violations]
        assert len(fields) == len(set(fields)), f"a field reported twice: {fields}"
        return {v.field: v.description for v in exc.violations}
    return {}


def test_ok_done_without_violations_raises_nothing() -> None:
    Validator().done()


def test_invalid_argument_done_reports_every_violation_in_order() -> None:
    check = Validator()
    check.id("key_id", "", "key")
    check.permission_name("permissions[0]", "bad name")
    check.secret("key", "")
    with pytest.raises(InvalidArgument) as e:
        check.done()
    assert [v.field for v in e.value.violations] == ["key_id", "permissions[0]", "key"]
    assert e.value.message == "invalid key_id: is required (and 2 more)"


def test_invalid_argument_single_violation_message() -> None:
    check = Validator()
    check.add("name", "is required")
    with pytest.raises(InvalidArgument) as e:
        check.done()
    assert e.value.violations == (FieldViolation("name", "is required"),)
    assert e.value.message == "invalid name: is required"


@pytest.mark.parametrize("value", ["key_1234abcd", "key_2cGKbMxRyIzhCxo1Idjz8q", "a", "_", "K" * 64])
def test_ok_id(value: str) -> None:
    check = Validator()
    check.id("key_id", value, "key")
    assert violations(check) == {}


@pytest.mark.parametrize("value", ["key-1", "key 1", "key.1", "key_é", "K" * 65, " key_1", "key_1\n"])
def test_invalid_argument_id(value: str) -> None:
    check = Validator()
    check.id("key_id", value, "key")
    assert violations(check) == {"key_id": "must match ^[a-zA-Z0-9_]+$ and be at most 64 characters, like key_3f9c2a"}


def test_invalid_argument_id_required() -> None:
    check = Validator()
    check.id("api_id", "", "api")
    assert violations(check) == {"api_id": "is required"}


@pytest.mark.parametrize(
    "value", ["documents.read", "read:users", "api.*.update_key", "doc*", "*", "a-b_c:d.e*", "n" * 280, "documents."]
)
def test_ok_permission_name(value: str) -> None:
    check = Validator()
    assert check.permission_name("permissions[0]", value) is True
    assert violations(check) == {}


@pytest.mark.parametrize(
    ("value", "description"),
    [
        ("", "must not be empty"),
        ("n" * 281, "must be at most 280 characters (got 281)"),
        ("documents read", r"must match ^[a-zA-Z0-9_:\-\.\*]+$"),
        ("documents/read", r"must match ^[a-zA-Z0-9_:\-\.\*]+$"),
        ("documents.réad", r"must match ^[a-zA-Z0-9_:\-\.\*]+$"),
        ("documents.read\n", r"must match ^[a-zA-Z0-9_:\-\.\*]+$"),
        ("a(b)", r"must match ^[a-zA-Z0-9_:\-\.\*]+$"),
    ],
)
def test_invalid_argument_permission_name(value: str, description: str) -> None:
    check = Validator()
    assert check.permission_name("permissions[3]", value) is False
    assert violations(check) == {"permissions[3]": description}


def test_ok_permission_names_deduplicated_in_first_seen_order() -> None:
    check = Validator()
    names = check.permission_names("permissions", ["b", "a", "b", "c", "a"])
    assert names == ["b", "a", "c"]
    assert violations(check) == {}


def test_invalid_argument_permission_names_indexed() -> None:
    check = Validator()
    check.permission_names("permissions", ["ok", "", "also ok", "fine.*", "x" * 281])
    assert violations(check) == {
        "permissions[1]": "must not be empty",
        "permissions[2]": r"must match ^[a-zA-Z0-9_:\-\.\*]+$",
        "permissions[4]": "must be at most 280 characters (got 281)",
    }


def test_ok_permission_names_at_max_list() -> None:
    check = Validator()
    names = check.permission_names("permissions", [f"p{i}" for i in range(MAX_LIST)])
    assert len(names) == 1000
    assert violations(check) == {}


def test_invalid_argument_permission_names_over_max_list() -> None:
    # One violation for the list, not a thousand for its entries.
    check = Validator()
    names = check.permission_names("permissions", ["bad name"] * (MAX_LIST + 1))
    assert names == []
    assert violations(check) == {"permissions": "must hold at most 1000 names (got 1001)"}


@pytest.mark.parametrize("value", ["admin", "billing.viewer", "team:ops", "a-b_c", "r" * 64])
def test_ok_role_name(value: str) -> None:
    check = Validator()
    check.role_name("roles[0]", value)
    assert violations(check) == {}


@pytest.mark.parametrize("value", ["admin*", "a b", "r" * 65, "rôle"])
def test_invalid_argument_role_name(value: str) -> None:
    # Unlike permissions, role names take no wildcard.
    check = Validator()
    check.role_name("roles[0]", value)
    assert violations(check) == {"roles[0]": r"must match ^[a-zA-Z0-9_:\-\.]+$ and be at most 64 characters"}


def test_invalid_argument_role_names() -> None:
    check = Validator()
    names = check.role_names("roles", ["admin", "", "admin", "x*"])
    assert names == ["admin", "", "x*"]
    assert violations(check) == {
        "roles[1]": "must not be empty",
        "roles[3]": r"must match ^[a-zA-Z0-9_:\-\.]+$ and be at most 64 characters",
    }


def test_invalid_argument_role_names_over_max_list() -> None:
    check = Validator()
    assert check.role_names("roles", ["r"] * (MAX_LIST + 1)) == []
    assert violations(check) == {"roles": "must hold at most 1000 names (got 1001)"}


def test_ok_scopes() -> None:
    check = Validator()
    specs = check.scopes("scopes", [("read:users", "Read users"), ("write:users", "")])
    assert specs == [ScopeSpec("read:users", "Read users"), ScopeSpec("write:users", "")]
    assert violations(check) == {}


def test_invalid_argument_scopes_named_by_index_and_field() -> None:
    check = Validator()
    check.scopes(
        "scopes",
        [
            ("read:users", "ok"),
            ("", "ok"),
            ("read:users", "d" * 501),
            ("bad value", "tab\tand newline\n are fine"),
            ("x", "bell \x07"),
        ],
    )
    assert violations(check) == {
        "scopes[1].value": "must not be empty",
        "scopes[2].value": "duplicates scopes[0].value 'read:users'",
        "scopes[2].description": "must be at most 500 characters (got 501)",
        "scopes[3].value": r"must match ^[a-zA-Z0-9_:\-\.\*]+$",
        "scopes[4].description": "must not contain control characters",
    }


def test_invalid_argument_scopes_duplicate_points_at_first_occurrence() -> None:
    check = Validator()
    check.scopes("scopes", [("a", ""), ("b", ""), ("b", ""), ("a", ""), ("b", "")])
    assert violations(check) == {
        "scopes[2].value": "duplicates scopes[1].value 'b'",
        "scopes[3].value": "duplicates scopes[0].value 'a'",
        "scopes[4].value": "duplicates scopes[1].value 'b'",
    }


def test_ok_scopes_values_are_case_sensitive() -> None:
    check = Validator()
    check.scopes("scopes", [("read:users", ""), ("READ:users", "")])
    assert violations(check) == {}


def test_invalid_argument_scopes_over_max_list() -> None:
    check = Validator()
    assert check.scopes("scopes", [(f"s{i}", "") for i in range(MAX_LIST + 1)]) == []
    assert violations(check) == {"scopes": "must hold at most 1000 scopes (got 1001)"}


@pytest.mark.parametrize(
    ("value", "required", "expected"),
    [
        ("a name", True, {}),
        ("x" * 200, True, {}),
        ("", False, {}),
        ("multi\nline", False, {"name": "must not contain control characters"}),
        ("tab\tinside", False, {"name": "must not contain control characters"}),
        ("ünïcödé 名前", False, {}),
        ("", True, {"name": "is required"}),
        ("   ", True, {"name": "is required"}),
        ("x" * 201, True, {"name": "must be at most 200 characters (got 201)"}),
        ("nul\x00", False, {"name": "must not contain control characters"}),
        ("escape\x1b[31m", False, {"name": "must not contain control characters"}),
        ("carriage\rreturn", False, {"name": "must not contain control characters"}),
        ("no\u00a0break space", False, {}),  # a space, not a control character
        ("zero\u200bwidth", False, {}),  # a format character, not a control character
    ],
)
def test_text(value: str, required: bool, expected: dict[str, str]) -> None:
    check = Validator()
    check.text("name", value, max_length=200, required=required)
    assert violations(check) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("multi\nline\ttext", {}),
        ("nul\x00", {"description": "must not contain control characters"}),
        ("carriage\rreturn", {"description": "must not contain control characters"}),
    ],
)
def test_text_multiline(value: str, expected: dict[str, str]) -> None:
    check = Validator()
    check.text("description", value, max_length=500, multiline=True)
    assert violations(check) == expected


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("", True),  # no prefix
        ("sk", True),
        ("p" * 16, True),
        ("my_prefix_1", True),
        ("p" * 17, False),
        ("sk-live", False),
        ("sk.", False),
        ("sk live", False),
    ],
)
def test_prefix(value: str, ok: bool) -> None:
    check = Validator()
    check.prefix("prefix", value)
    expected = {} if ok else {"prefix": "must match ^[a-zA-Z0-9_]+$ and be at most 16 characters"}
    assert violations(check) == expected


@pytest.mark.parametrize(
    ("seconds", "nanos", "ok"),
    [
        (0, 0, True),
        (1_700_000_000, 999_999_999, True),
        (253402300799, 0, True),  # 9999-12-31T23:59:59Z
        (253402300800, 0, False),
        (-1, 0, False),
        (0, -1, False),
        (0, 1_000_000_000, False),
    ],
)
def test_timestamp(seconds: int, nanos: int, ok: bool) -> None:
    check = Validator()
    assert check.timestamp("expire_time", seconds, nanos) is ok
    expected = {} if ok else {"expire_time": "must lie between 1970-01-01T00:00:00Z and 9999-12-31T23:59:59Z"}
    assert violations(check) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("ksk_abc", {}),
        ("s" * 512, {}),
        ("", {"key": "is required"}),
        ("s" * 513, {"key": "must be at most 512 characters"}),
    ],
)
def test_secret(value: str, expected: dict[str, str]) -> None:
    check = Validator()
    check.secret("key", value)
    assert violations(check) == expected


def test_secret_is_never_echoed() -> None:
    secret = "sk_" + "Zq9" * 200
    check = Validator()
    check.secret("key", secret)
    with pytest.raises(InvalidArgument) as e:
        check.done()
    assert "Zq9" not in e.value.message
    assert all("Zq9" not in v.description for v in e.value.violations)
