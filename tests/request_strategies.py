"""Hypothesis strategies for keyscope.v1 requests, built field by field from the message descriptors.

The values come from tests/field_strategies.py (fields the contract names) and tests/value_strategies.py
(any value of a type).

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

`Pools` (tests/field_strategies.py) is what the world holds at draw time; the strategies read it lazily, so
requests name resources created by earlier examples.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from hypothesis import strategies as st
from hypothesis.strategies import SearchStrategy

from tests.field_strategies import (
    UNSET,
    Pools,
    display_text,
    etags,
    extreme_timestamps,
    ids,
    page_tokens,
    permission_names,
    queries,
    revisions,
    role_names,
    secrets,
    timestamps,
)
from tests.value_strategies import INT32, INT64, any_int, any_text, big_list, lists_of, mutated, padded, pick

__all__ = ["UNSET", "Pools", "Shown", "request_strategy"]


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
