"""Hypothesis strategies for values of any field, at and past their boundaries: text of any Unicode and of
limit-1, limit and limit+1 lengths, plausible values slightly broken, int extremes, big and duplicated lists;
and `pick`, an element of a pool as it is when drawn."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from hypothesis import strategies as st
from hypothesis.strategies import SearchStrategy

__all__ = [
    "BIG_LIST_SIZES",
    "BOUNDARY_LENGTHS",
    "FILL_CHARS",
    "INDEX",
    "INT32",
    "INT64",
    "NASTY_CHARS",
    "any_int",
    "any_text",
    "big_list",
    "lists_of",
    "mutated",
    "padded",
    "pick",
]

INT32 = (-(2**31), 2**31 - 1)
INT64 = (-(2**63), 2**63 - 1)
# The length limits of the contract (proto comments; secrets and request ids from the server's rules).
LIMITS = (16, 64, 128, 200, 280, 500, 512, 1000)
BOUNDARY_LENGTHS = tuple(sorted({n + d for n in LIMITS for d in (-1, 0, 1)}))
BIG_LIST_SIZES = (1000, 1001, 10_000)

# One code point each, so `ch * n` is n characters long: ASCII, Latin-1, RTL, astral, NUL, space...
FILL_CHARS = ("a", "_", "é", "\u05d0", "\U0001d518", "\U0001f600", "\x00", " ", "*", "\u0301", "\u202e")
# Characters that break parsers, normalizers and length counting.
NASTY_CHARS = (
    "\x00", "\x01", "\x1f", "\x7f", "\u0085", "\t", "\n", "\r", " ", "\u00a0", "\u200b", "\u200d", "\u202e",
    "\u2028", "\ufeff", "\ufffd", "\uffff", "\U0001f600", "\U0010ffff", "e\u0301", "\u05d0\u05d1", "\u0627",
    "\u0130", "\u00df", "\ufb01", "\u212a", "/", "\\", "'", '"', "%", "%00", "..", "*", ".", ":", "-", "(", ")",
)  # fmt: skip

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
