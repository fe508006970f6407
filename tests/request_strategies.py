"""Hypothesis strategies for keyscope.v1 requests, built field by field from the message descriptors.

`request_strategy(descriptor, pools)` draws a whole request message. Each field gets a strategy from
its name and type: *good* values that can pass validation and reach the store (ids of real resources,
secrets of real keys, catalog names, current etags...), *bad* values aimed at that field's rules
(malformed ids, limit+1 lengths, absurd permission queries, out-of-range timestamps and integers...),
and, for every field, generic values of its type (any Unicode, NUL and control characters, boundary
lengths, int extremes, big and duplicated lists). A field this module does not know yet still gets
the generic values of its type, so new fields are fuzzed without an edit here.

A request is drawn in one of two modes: `valid`, where every field takes a good value (so calls reach
the store and change it), and `mixed`, where each field may also be bad or generic. Requests come wrapped
in `Shown`, whose repr is short enough to read in a failure report even with a 10k-entry list.

`Pools` is what the world holds at draw time; the strategies read it lazily, so requests name resources
created by earlier examples.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from google.protobuf import message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from hypothesis import strategies as st
from hypothesis.strategies import SearchStrategy

__all__ = ["UNSET", "Pools", "Shown", "request_strategy"]

INT32 = (-(2**31), 2**31 - 1)
INT64 = (-(2**63), 2**63 - 1)
# The length limits of the contract (proto comments; secrets and request ids from the server's rules).
LIMITS = (16, 64, 128, 200, 280, 500, 512, 1000)
BOUNDARY_LENGTHS = tuple(sorted({n + d for n in LIMITS for d in (-1, 0, 1)}))
MAX_TIMESTAMP_SECONDS = 253402300799  # 9999-12-31T23:59:59Z, the largest valid google.protobuf.Timestamp
MIN_TIMESTAMP_SECONDS = -62135596800  # 0001-01-01T00:00:00Z
BIG_LIST_SIZES = (1000, 1001, 10_000)

# One code point each, so `ch * n` is n characters long: ASCII, Latin-1, RTL, astral, NUL, space...
FILL_CHARS = ("a", "_", "é", "\u05d0", "\U0001d518", "\U0001f600", "\x00", " ", "*", "\u0301", "\u202e")
# Characters that break parsers, normalizers and length counting.
NASTY_CHARS = (
    "\x00", "\x01", "\x1f", "\x7f", "\u0085", "\t", "\n", "\r", " ", "\u00a0", "\u200b", "\u200d", "\u202e",
    "\u2028", "\ufeff", "\ufffd", "\uffff", "\U0001f600", "\U0010ffff", "e\u0301", "\u05d0\u05d1", "\u0627",
    "\u0130", "\u00df", "\ufb01", "\u212a", "/", "\\", "'", '"', "%", "%00", "..", "*", ".", ":", "-", "(", ")",
)  # fmt: skip
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


# -- building blocks ----------------------------------------------------------------------------------


# Draws whose bounds or branches depend on the pools would make Hypothesis see the strategy change between
# examples (FlakyStrategyDefinition): indexes are drawn from fixed ranges and taken modulo the pool's size.
INDEX = st.integers(0, 2**16 - 1)


@st.composite
def pick(draw: st.DrawFn, values: Sequence[Any], fallback: SearchStrategy[Any] | None = None) -> Any:
    """An element of a pool as it is when drawn (of `fallback`, or "", while the pool is empty)."""
    index = draw(INDEX)
    other = "" if fallback is None else draw(fallback)
    return values[index % len(values)] if values else other


def padded(head: SearchStrategy[str], fill: Sequence[str] = FILL_CHARS) -> SearchStrategy[str]:
    """`head` padded or cut to a boundary length (a limit -1, the limit, the limit +1)."""

    def build(text: str, length: int, ch: str) -> str:
        return (text + ch * length)[:length]

    return st.builds(build, head, st.sampled_from(BOUNDARY_LENGTHS), st.sampled_from(fill))


@st.composite
def mutated(draw: st.DrawFn, base: SearchStrategy[str]) -> str:
    """A plausible value, slightly broken: a nasty character inserted, one cut off, doubled, cased..."""
    text = draw(base)
    how = draw(st.sampled_from(["insert", "append", "truncate", "double", "upper", "strip_prefix"]))
    if how == "insert":
        at = draw(INDEX) % (len(text) + 1)
        return text[:at] + draw(st.sampled_from(NASTY_CHARS)) + text[at:]
    if how == "append":
        return text + draw(st.sampled_from(NASTY_CHARS))
    if how == "truncate":
        return text[:-1]
    if how == "double":
        return text + text
    if how == "upper":
        return text.upper()
    return text.partition("_")[2]


def any_text() -> SearchStrategy[str]:
    """Any string: empty, any Unicode but surrogates (protobuf cannot carry them), nasty characters,
    boundary lengths."""
    return st.one_of(
        st.just(""),
        st.text(max_size=40),
        st.lists(st.sampled_from(NASTY_CHARS), min_size=1, max_size=12).map("".join),
        padded(st.text(max_size=8)),
    )


def any_int(bounds: tuple[int, int]) -> SearchStrategy[int]:
    low, high = bounds
    return st.one_of(st.sampled_from([0, -1, 1, low, high, low + 1, high - 1]), st.integers(low, high))


@st.composite
def big_list(draw: st.DrawFn, heads: SearchStrategy[str], valid: bool = False) -> list[str]:
    """1000, 1001 or 10k names from a few draws (drawing each element would overflow Hypothesis' buffer):
    distinct, all the same, distinct with one bad entry, or past the server's 4 MiB message limit.
    `valid`: 1000 distinct names from a valid head."""
    head = draw(heads)[:48]  # 10k entries of at most 48 characters (4 bytes each) stay under 2 MB
    if valid:
        return [f"{head}{i}" for i in range(BIG_LIST_SIZES[0])]
    size = draw(st.sampled_from(BIG_LIST_SIZES))
    shape = draw(st.sampled_from(["distinct", "same", "one_bad", "oversize"]))
    if shape == "same":
        return [head] * size
    if shape == "oversize":
        return [f"{head:o<500}{i}" for i in range(10_000)]
    names = [f"{head}{i}" for i in range(size)]
    if shape == "one_bad":
        names[draw(INDEX) % size] = draw(any_text())
    return names


def lists_of(element: SearchStrategy[Any], big: SearchStrategy[list[Any]] | None) -> SearchStrategy[list[Any]]:
    """Mostly short lists, some with an entry repeated; now and then (1 in 16) a big one."""
    short = st.lists(element, max_size=6)
    with_duplicate = st.builds(
        lambda xs, k: xs + xs[: k + 1], st.lists(element, min_size=1, max_size=4), st.integers(0, 3)
    )
    options = [short] * 14 + [with_duplicate]
    return st.one_of(*options, big if big is not None else short)


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


# -- fields and messages -------------------------------------------------------------------------------

_INTS = {
    FieldDescriptor.TYPE_INT32: INT32,
    FieldDescriptor.TYPE_SINT32: INT32,
    FieldDescriptor.TYPE_SFIXED32: INT32,
    FieldDescriptor.TYPE_INT64: INT64,
    FieldDescriptor.TYPE_SINT64: INT64,
    FieldDescriptor.TYPE_SFIXED64: INT64,
    FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_FIXED32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1),
    FieldDescriptor.TYPE_FIXED64: (0, 2**64 - 1),
}


def _generic(field: FieldDescriptor, pools: Pools, depth: int) -> SearchStrategy[Any]:
    """Any value of the field's type."""
    kind = field.type
    if kind == FieldDescriptor.TYPE_STRING:
        return any_text()
    if kind == FieldDescriptor.TYPE_BYTES:
        return st.binary(max_size=64)
    if kind == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if kind in _INTS:
        return any_int(_INTS[kind])
    if kind in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        return st.floats(width=32 if kind == FieldDescriptor.TYPE_FLOAT else 64)
    if kind == FieldDescriptor.TYPE_ENUM:
        return st.one_of(st.sampled_from([v.number for v in field.enum_type.values]), any_int(INT32))
    if field.message_type.full_name == Timestamp.DESCRIPTOR.full_name:
        return extreme_timestamps()
    if depth > 3:
        return st.just(UNSET)
    return message_strategy(field.message_type, pools, st.just("mixed"), depth + 1)


def _known(
    message: Descriptor, field: FieldDescriptor, pools: Pools
) -> tuple[SearchStrategy[Any], SearchStrategy[Any]] | None:
    """(good, bad) for one value of a field this module knows, by its name (and message); None for others."""
    name = field.name
    where = f"{message.name}.{name}"
    if field.type == FieldDescriptor.TYPE_STRING:
        if where == "VerifyKeyRequest.key":
            return secrets(pools)
        if where == "VerifyKeyRequest.permissions":
            return queries(pools)
        if where == "Scope.value" or name == "permissions":
            return permission_names(pools)
        if where == "Scope.id":
            return st.just(""), ids(pools, None)[1]  # output only: ignored in requests
        if name == "roles":
            return role_names(pools)
        if where == "CreateRoleRequest.name":
            return role_names(pools, new=True)
        if name == "resource_id":
            return ids(pools, None)
        if name.endswith("_id"):
            return ids(pools, name.removesuffix("_id"))
        if name == "actor":
            good = st.one_of(pick(pools.ids["root"]), st.just("cli"))
            return good, mutated(good)
        if name == "action":
            return pick(pools.actions), mutated(pick(pools.actions))
        if name == "etag":
            return etags(pools)
        if name == "page_token":
            return page_tokens(pools)
        if name == "name":
            return display_text(200, multiline=False)
        if name == "description":
            return display_text(500, multiline=True)
        if name == "prefix":
            good = st.from_regex(r"[a-zA-Z0-9_]{1,16}", fullmatch=True)
            return good, st.one_of(mutated(good), padded(st.just("p"), ("p", "-", "é")))
    if field.type == FieldDescriptor.TYPE_INT64 and name == "min_revision":
        return revisions(pools, ahead=False), st.one_of(revisions(pools, ahead=True), any_int(INT64))
    if field.type == FieldDescriptor.TYPE_INT32 and name == "page_size":
        return st.integers(0, 1000), st.one_of(st.sampled_from([-1, 1001]), any_int(INT32))
    if field.type == FieldDescriptor.TYPE_BOOL:  # mostly false: validate_only and clear_expire_time undo much
        return st.sampled_from([False, False, True]), st.booleans()
    if field.type == FieldDescriptor.TYPE_MESSAGE and field.message_type.full_name == Timestamp.DESCRIPTOR.full_name:
        return timestamps(name)
    return None


def field_strategy(
    message: Descriptor, field: FieldDescriptor, pools: Pools, mode: str, depth: int
) -> SearchStrategy[Any]:
    known = _known(message, field, pools)
    if known is None and field.type == FieldDescriptor.TYPE_MESSAGE:
        element: SearchStrategy[Any] = (
            message_strategy(field.message_type, pools, st.just(mode), depth + 1) if depth < 3 else st.just(UNSET)
        )
        known = (element, _generic(field, pools, depth))
    # A field nothing is known about is good left out, and bad with any value of its type.
    good, bad = known if known is not None else (st.just(UNSET), _generic(field, pools, depth))
    if field.is_repeated:
        good, bad = _repeated(field, good, st.one_of(bad, _generic(field, pools, depth)))
    else:
        if field.has_presence:  # `optional` scalars and messages: unset is good too
            good = st.one_of(good, st.just(UNSET))
        if known is not None:
            bad = st.one_of(bad, _generic(field, pools, depth))
    if mode == "valid":
        return good
    return st.one_of(good, good, good, bad)


def _repeated(
    field: FieldDescriptor, element: SearchStrategy[Any], bad_element: SearchStrategy[Any]
) -> tuple[SearchStrategy[list[Any]], SearchStrategy[list[Any]]]:
    """(good, bad) lists of a repeated field, from (good, bad) elements."""
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        good = _unique_values(lists_of(element, None))
        big = None
        if "value" in field.message_type.fields_by_name:  # Scope: 1000, 1001, 10k entries
            cls = message_factory.GetMessageClass(field.message_type)
            heads = st.one_of(st.sampled_from(["s.", "scope_"]), any_text())
            big = big_list(heads).map(lambda values: [cls(value=v) for v in values])
        bad = lists_of(st.one_of(element, bad_element), big)
    else:
        good = lists_of(element, big_list(st.sampled_from(["big.", "r", "p:"]), valid=True))
        bad = lists_of(st.one_of(element, bad_element), big_list(st.one_of(any_text(), element)))
    return good.map(_without_unset), bad.map(_without_unset)


def _without_unset(values: list[Any]) -> list[Any]:
    return [v for v in values if v is not UNSET]


def _unique_values(strategy: SearchStrategy[list[Any]]) -> SearchStrategy[list[Any]]:
    """Lists of messages (Scopes) with each `value` once, as a valid request has them."""

    def dedupe(scopes: list[Any]) -> list[Any]:
        seen: dict[str, Any] = {}
        for scope in scopes:
            seen.setdefault(getattr(scope, "value", id(scope)), scope)
        return list(seen.values())

    return strategy.map(dedupe)


def message_strategy(
    descriptor: Descriptor, pools: Pools, modes: SearchStrategy[str], depth: int = 0
) -> SearchStrategy[Message]:
    cls = message_factory.GetMessageClass(descriptor)

    def build(values: dict[str, Any]) -> Message:
        return cls(**{name: value for name, value in values.items() if value is not UNSET})

    by_mode = {
        mode: st.fixed_dictionaries(
            {f.name: field_strategy(descriptor, f, pools, mode, depth) for f in descriptor.fields}
        ).map(build)
        for mode in ("valid", "mixed")
    }
    return modes.flatmap(by_mode.__getitem__)


def request_strategy(descriptor: Descriptor, pools: Pools) -> SearchStrategy[Shown]:
    """Requests of one RPC: half all good (to reach the store), half mixed."""
    return shown(message_strategy(descriptor, pools, st.sampled_from(["valid", "mixed"])))


class Shown:
    """A drawn request, with a short repr: Hypothesis prints failing examples, where a 10k-entry list would bury
    the field to blame."""

    def __init__(self, message: Message) -> None:
        self.message = message

    def __repr__(self) -> str:
        return _brief(self.message)


def _brief(message: Message) -> str:
    parts = []
    for descriptor, value in message.ListFields():
        if descriptor.is_repeated:
            items = ", ".join(_brief_value(v) for v in value[:4])
            if len(value) > 4:
                items += f", ... ({len(value)} in all, {len({str(v) for v in value})} distinct)"
            parts.append(f"{descriptor.name}=[{items}]")
        else:
            parts.append(f"{descriptor.name}={_brief_value(value)}")
    return f"{message.DESCRIPTOR.name}({', '.join(parts)})"


def _brief_value(value: Any) -> str:
    if isinstance(value, Message):
        return _brief(value)
    if isinstance(value, str) and len(value) > 64:
        return f"{value[:24]!r} ... {value[-8:]!r} ({len(value)} characters)"
    return repr(value)


@st.composite
def shown(draw: st.DrawFn, requests: SearchStrategy[Message]) -> Shown:
    # A composite, not .map(Shown): Hypothesis would print the arguments of a mapped call in full.
    return Shown(draw(requests))
