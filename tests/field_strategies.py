"""(good, bad) Hypothesis strategies for the fields of the keyscope.v1 contract, by what they hold: ids of real
resources, permission and role names, display text, permission queries, secrets, etags, page tokens,
timestamps and revisions. Good values can pass validation and reach the store; bad ones aim at the field's
rules. `Pools` is what the world holds when a value is drawn."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp
from hypothesis import strategies as st
from hypothesis.strategies import SearchStrategy

from tests.value_strategies import INDEX, INT32, INT64, any_int, any_text, mutated, padded, pick

__all__ = [
    "UNSET",
    "Pools",
    "display_text",
    "etags",
    "extreme_timestamps",
    "ids",
    "page_tokens",
    "permission_names",
    "queries",
    "revisions",
    "role_names",
    "secrets",
    "timestamps",
]

MAX_TIMESTAMP_SECONDS = 253402300799  # 9999-12-31T23:59:59Z, the largest valid google.protobuf.Timestamp
MIN_TIMESTAMP_SECONDS = -62135596800  # 0001-01-01T00:00:00Z
PERMISSION_NAME = r"[a-zA-Z0-9_:\-.*]{1,24}"
ROLE_NAME = r"[a-zA-Z0-9_:\-.]{1,24}"  # + "." + 12 hex digits for a fresh name: 1 to 64 characters


UNSET: Any = object()  # a field left out of the request (for fields with presence, not the same as a default)


@dataclass(repr=False)  # strategies show their arguments in Hypothesis' messages: keep pools out of them
class Pools:
    """What the world holds, read when a value is drawn; the test appends to the lists as calls succeed."""

    ids: dict[str, list[str]] = field(default_factory=lambda: {"api": [], "key": [], "role": [], "root": []})
    secrets: list[str] = field(default_factory=list)
    permission_names: list[str] = field(default_factory=list)
    role_names: list[str] = field(default_factory=list)
    etags: list[str] = field(default_factory=list)
    page_tokens: list[str] = field(default_factory=list)
    actions: list[str] = field(default_factory=list)
    revision: Callable[[], int] = lambda: 0


# -- values of particular fields ----------------------------------------------------------------------


def ids(pools: Pools, kind: str | None) -> tuple[SearchStrategy[str], SearchStrategy[str]]:
    """(good, bad) for a field holding the id of a `kind` of resource (any kind: None)."""
    kinds = [kind] if kind in pools.ids else list(pools.ids)
    good = st.sampled_from(kinds).flatmap(lambda k: pick(pools.ids[k]))
    any_kind = st.sampled_from(list(pools.ids)).flatmap(lambda k: pick(pools.ids[k]))
    prefix = f"{kind or 'key'}_"
    bad = st.one_of(
        mutated(good),
        any_kind,
        padded(st.just(prefix), ("a", "_", "é", "-", " ", "\x00")),
        st.builds(lambda s: prefix + s, st.text(max_size=20)),
    )
    return good, bad


def permission_names(pools: Pools) -> tuple[SearchStrategy[str], SearchStrategy[str]]:
    good = st.one_of(
        pick(pools.permission_names),
        st.from_regex(PERMISSION_NAME, fullmatch=True),
        st.sampled_from(["*", "documents.*", "*.*", "p" * 280, "a:b-c_d.e*"]),
    )
    bad = st.one_of(st.just(""), mutated(good), padded(st.just("p."), ("p", "*", "é", " ")))
    return good, bad


def role_names(pools: Pools, new: bool = False) -> tuple[SearchStrategy[str], SearchStrategy[str]]:
    """(good, bad) role names: mostly existing ones, or with `new` (CreateRole) mostly fresh ones."""
    fresh = st.builds(lambda head, u: f"{head}.{u.hex[:12]}", st.from_regex(ROLE_NAME, fullmatch=True), st.uuids())
    existing = pick(pools.role_names)
    good = st.one_of(fresh, fresh, fresh, st.just("r" * 64)) if new else st.one_of(existing, fresh, st.just("r" * 64))
    bad = st.one_of(st.just(""), mutated(good), padded(st.just("role."), ("r", "*", "é", " ")), existing)
    return good, bad


def display_text(max_length: int, multiline: bool) -> tuple[SearchStrategy[str], SearchStrategy[str]]:
    """Free text shown to people: names (one line) and descriptions (multiline)."""
    printable = st.characters(exclude_categories=["Cc", "Cs"], include_characters="\t\n" if multiline else "")
    good = st.one_of(
        st.text(printable, min_size=1, max_size=40),
        st.sampled_from(["x" * max_length, "é" * max_length, "\U0001d518" * max_length, "e\u0301" * (max_length // 2)]),
    )
    bad = st.one_of(
        st.sampled_from(["", " ", "\t\n", "x" * (max_length + 1), "\U0001d518" * (max_length + 1)]),
        mutated(good),
    )
    return good, bad


@st.composite
def query_tree(draw: st.DrawFn, names: SearchStrategy[str]) -> str:
    """A well-formed permission query: names joined by AND / OR in any case, with parentheses."""
    operators = st.sampled_from(["AND", "OR", "and", "or", "And", "oR"])
    tree = st.recursive(
        names,
        lambda inner: st.one_of(
            st.builds(lambda a, op, b: f"{a} {op} {b}", inner, operators, inner),
            st.builds(lambda a: f"({a})", inner),
        ),
        max_leaves=8,
    )
    return draw(tree)


@st.composite
def absurd_query(draw: st.DrawFn, names: SearchStrategy[str]) -> str:
    """Queries at and past the parser's limits, and broken ones."""
    name = draw(names)
    shape = draw(
        st.sampled_from(["nested", "unbalanced", "dangling", "long", "long_name", "operators", "broken", "text"])
    )
    if shape == "nested":
        depth = draw(st.sampled_from([31, 32, 33, 64, 400]))
        return "(" * depth + name + ")" * depth
    if shape == "unbalanced":
        depth = draw(st.integers(1, 600))
        return draw(st.sampled_from(["(" * depth + name, name + ")" * depth, ")" * depth + name + "(" * depth]))
    if shape == "dangling":
        return draw(st.sampled_from([f"{name} AND", f"OR {name}", f"{name} AND OR {name}", "()", "(", ")", "AND"]))
    if shape == "long":
        length = draw(st.sampled_from([999, 1000, 1001, 5000]))
        joined = draw(st.sampled_from([" AND ", " OR ", " "])).join([name] * (length // (len(name) + 1) + 1))
        return joined[:length]
    if shape == "long_name":
        return "q" * draw(st.sampled_from([279, 280, 281, 1000]))
    if shape == "operators":
        return " ".join(draw(st.lists(st.sampled_from(["AND", "OR", "and", "or", "(", ")", "&&", "||", "NOT"]))))
    if shape == "broken":
        return draw(mutated(query_tree(names)))
    return draw(any_text())


def queries(pools: Pools) -> tuple[SearchStrategy[str], SearchStrategy[str]]:
    names = permission_names(pools)[0]
    good = st.one_of(st.just(""), query_tree(names))
    return good, absurd_query(names)


def secrets(pools: Pools) -> tuple[SearchStrategy[str], SearchStrategy[str]]:
    good = pick(pools.secrets)
    bad = st.one_of(mutated(good), padded(st.just("ks_")), st.just(" "))
    return good, bad


def etags(pools: Pools) -> tuple[SearchStrategy[str], SearchStrategy[str]]:
    good = st.one_of(st.just(""), pick(pools.etags))
    bad = st.one_of(mutated(pick(pools.etags, fallback=st.just("1"))), st.sampled_from(['W/"1"', "0", "-1", "9" * 30]))
    return good, bad


def page_tokens(pools: Pools) -> tuple[SearchStrategy[str], SearchStrategy[str]]:
    good = st.one_of(st.just(""), pick(pools.page_tokens))
    garbage = st.binary(min_size=1, max_size=48).map(lambda b: b.hex())
    bad = st.one_of(mutated(pick(pools.page_tokens, fallback=garbage)), garbage, st.sampled_from(["=", "AAAA", "-1"]))
    return good, bad


@st.composite
def timestamps_from_now(draw: st.DrawFn, low: int, high: int) -> Timestamp:
    offset = draw(st.integers(low, high))
    return Timestamp(seconds=int(time.time()) + offset, nanos=draw(st.integers(0, 999_999_999)))


def extreme_timestamps() -> SearchStrategy[Timestamp]:
    seconds = st.sampled_from(
        [
            0,
            -1,
            1,
            MAX_TIMESTAMP_SECONDS,
            MAX_TIMESTAMP_SECONDS + 1,
            MIN_TIMESTAMP_SECONDS,
            MIN_TIMESTAMP_SECONDS - 1,
            *INT64,
        ]
    )
    nanos = st.sampled_from([0, 1, 999_999_999, 1_000_000_000, -1, *INT32])
    return st.builds(Timestamp, seconds=st.one_of(seconds, any_int(INT64)), nanos=st.one_of(nanos, any_int(INT32)))


def timestamps(name: str) -> tuple[SearchStrategy[Any], SearchStrategy[Any]]:
    if name == "expire_time":  # a key's expiry: in the future to be valid on creation
        good = st.one_of(st.just(UNSET), timestamps_from_now(60, 10 * 365 * 86400))
    else:  # a filter on times: anything from 1970 to 9999 is valid
        good = st.one_of(st.just(UNSET), timestamps_from_now(-86400, 86400))
    bad = st.one_of(timestamps_from_now(-10 * 365 * 86400, 0), extreme_timestamps())
    return good, bad


@st.composite
def revisions(draw: st.DrawFn, pools: Pools, ahead: bool) -> int:
    current = pools.revision()
    if ahead:
        return current + draw(st.integers(1, 3))
    return draw(st.one_of(st.just(0), st.just(current), INDEX.map(lambda n: n % (current + 1))))
