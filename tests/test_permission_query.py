"""keyscope_server.permission_query: VerifyKey's query grammar, its errors (with 1-based positions) and its
evaluation."""

from __future__ import annotations

import pytest

from keyscope_server.permission_query import MAX_DEPTH, MAX_NAME_LENGTH, MAX_QUERY_LENGTH, QuerySyntaxError, parse_query


def test_limits_are_the_documented_ones() -> None:
    # keys.proto and permissions.proto promise these numbers to callers.
    assert (MAX_QUERY_LENGTH, MAX_DEPTH, MAX_NAME_LENGTH) == (1000, 32, 280)


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("documents.read", ("documents.read",)),
        ("documents.read AND (documents.write OR admin)", ("documents.read", "documents.write", "admin")),
        ("a AND a OR b", ("a", "b")),  # once each, in query order
        ("b OR a AND b", ("b", "a")),
        ("read:users OR api.*.verify_key OR doc* OR x-y_z", ("read:users", "api.*.verify_key", "doc*", "x-y_z")),
        ("  a\tAND\nb  ", ("a", "b")),  # any white space separates tokens
        ("(a)AND(b)", ("a", "b")),  # parentheses need no spaces
        ("((((a))))", ("a",)),
        ("android OR orange OR ANDY", ("android", "orange", "ANDY")),  # operators are whole words only
        ("and_more OR or.this", ("and_more", "or.this")),
    ],
)
def test_ok_parse_names(text: str, names: tuple[str, ...]) -> None:
    assert parse_query(text).names == names


@pytest.mark.parametrize("text", ["a AND b", "a and b", "a And b", "a aNd b"])
def test_ok_and_operator_in_any_case(text: str) -> None:
    query = parse_query(text)
    assert query.missing(["a", "b"]) == []
    assert query.missing(["a"]) == ["b"]


@pytest.mark.parametrize("text", ["a OR b", "a or b", "a Or b", "a oR b"])
def test_ok_or_operator_in_any_case(text: str) -> None:
    query = parse_query(text)
    assert query.missing(["b"]) == []
    assert query.missing(["c"]) == ["a", "b"]


@pytest.mark.parametrize(
    ("text", "held", "missing"),
    [
        # AND binds tighter than OR: `a OR b AND c` is `a OR (b AND c)`.
        ("a OR b AND c", ["a"], []),
        ("a OR b AND c", ["b", "c"], []),
        ("a OR b AND c", ["b"], ["a", "c"]),
        ("a OR b AND c", ["c"], ["a", "b"]),
        ("a AND b OR c", ["c"], []),
        ("a AND b OR c", ["a"], ["b", "c"]),
        # Parentheses override it.
        ("(a OR b) AND c", ["a"], ["b", "c"]),
        ("(a OR b) AND c", ["a", "c"], []),
        ("a AND (b OR c)", ["a", "c"], []),
        ("a AND (b OR c)", ["b", "c"], ["a"]),
        # The seed's example.
        ("documents.read AND (documents.write OR admin)", ["documents.read", "admin"], []),
        ("documents.read AND (documents.write OR admin)", ["documents.write"], ["documents.read", "admin"]),
        ("a", [], ["a"]),
        ("a AND a", ["b"], ["a"]),  # a name is reported once
    ],
)
def test_ok_missing_follows_precedence(text: str, held: list[str], missing: list[str]) -> None:
    assert parse_query(text).missing(held) == missing


@pytest.mark.parametrize(
    ("text", "held", "missing"),
    [
        # A held wildcard grants the names it matches, with the matcher's rules.
        ("documents.read AND documents.write", ["documents.*"], []),
        ("documents.read.own", ["documents.*"], ["documents.read.own"]),
        ("Documents.read", ["documents.*"], ["Documents.read"]),
        # A star in the query is a literal name: only the same name, or a wildcard segment, grants it.
        ("documents.*", ["documents.read"], ["documents.*"]),
        ("documents.*", ["documents.*"], []),
        ("doc*", ["documents"], ["doc*"]),
    ],
)
def test_ok_missing_uses_wildcard_matching(text: str, held: list[str], missing: list[str]) -> None:
    assert parse_query(text).missing(held) == missing


def test_ok_missing_accepts_a_one_shot_iterable() -> None:
    assert parse_query("a AND b").missing(p for p in ["a", "b"]) == []


@pytest.mark.parametrize(
    ("text", "position", "message"),
    [
        ("", 1, "expected a permission name or '(' but found the end of the query"),
        ("   ", 4, "expected a permission name or '(' but found the end of the query"),
        ("a AND", 6, "expected a permission name or '(' but found the end of the query"),
        ("a OR ", 6, "expected a permission name or '(' but found the end of the query"),
        ("AND a", 1, "expected a permission name or '(' but found 'AND'"),
        ("a AND AND b", 7, "expected a permission name or '(' but found 'AND'"),
        ("a and or b", 7, "expected a permission name or '(' but found 'or'"),  # the text as written
        ("()", 2, "expected a permission name or '(' but found ')'"),
        (") a", 1, "expected a permission name or '(' but found ')'"),
        ("(a", 3, "expected ')' but found the end of the query"),
        ("(a OR b c)", 9, "expected ')' but found 'c'"),
        ("a b", 3, "expected AND, OR or the end of the query but found 'b'"),
        ("a)", 2, "expected AND, OR or the end of the query but found ')'"),
        ("aAND b", 6, "expected AND, OR or the end of the query but found 'b'"),  # `aAND` is one name
        ("a & b", 3, "unexpected character '&'"),
        ("a AND b|c", 8, "unexpected character '|'"),
        ("  ébène", 3, "unexpected character 'é'"),
        ("a,b", 2, "unexpected character ','"),
        ("a/b", 2, "unexpected character '/'"),
    ],
)
def test_invalid_argument_syntax_error_names_position(text: str, position: int, message: str) -> None:
    with pytest.raises(QuerySyntaxError) as e:
        parse_query(text)
    assert (e.value.position, e.value.message) == (position, message)
    assert str(e.value) == f"at character {position}: {message}"


def test_invalid_argument_syntax_error_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        parse_query("a AND")


def test_ok_query_of_exactly_max_length() -> None:
    text = " " * (MAX_QUERY_LENGTH - 1) + "a"
    assert len(text) == MAX_QUERY_LENGTH
    assert parse_query(text).names == ("a",)


def test_invalid_argument_query_longer_than_max_length() -> None:
    # Checked before tokenizing: even a query that would parse is refused.
    text = " " * MAX_QUERY_LENGTH + "a"
    with pytest.raises(QuerySyntaxError) as e:
        parse_query(text)
    assert e.value.position == 1001
    assert e.value.message == "query longer than 1000 characters"


def test_ok_nesting_of_exactly_max_depth() -> None:
    text = "(" * MAX_DEPTH + "a" + ")" * MAX_DEPTH
    assert parse_query(text).missing(["a"]) == []


def test_invalid_argument_nesting_deeper_than_max_depth() -> None:
    text = "(" * (MAX_DEPTH + 1) + "a" + ")" * (MAX_DEPTH + 1)
    with pytest.raises(QuerySyntaxError) as e:
        parse_query(text)
    # The 33rd parenthesis is the one too deep.
    assert (e.value.position, e.value.message) == (33, "parentheses nested deeper than 32")


def test_ok_depth_counts_nesting_not_parentheses() -> None:
    # Many groups side by side are not deep.
    text = " OR ".join(["(a)"] * 100)
    assert len(text) <= MAX_QUERY_LENGTH
    assert parse_query(text).names == ("a",)


def test_ok_name_of_exactly_max_length() -> None:
    name = "n" * MAX_NAME_LENGTH
    assert parse_query(f"a OR {name}").names == ("a", name)


@pytest.mark.parametrize("operator", ["AND", "OR"])
def test_invalid_argument_name_longer_than_max_length(operator: str) -> None:
    name = "n" * (MAX_NAME_LENGTH + 1)
    with pytest.raises(QuerySyntaxError) as e:
        parse_query(f"a {operator} {name}")
    assert e.value.position == len(f"a {operator} ") + 1
    assert e.value.message == "permission name longer than 280 characters"


def test_ok_parse_is_repeatable() -> None:
    # parse_query caches; a cached query must answer like a fresh one, and errors must not stick.
    first = parse_query("x AND y")
    assert parse_query("x AND y") == first
    assert first.missing(["x"]) == ["y"]
    for _ in range(2):
        with pytest.raises(QuerySyntaxError):
            parse_query("x AND")
