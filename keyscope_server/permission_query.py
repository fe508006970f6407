"""VerifyKey's permission query: parsing and evaluation.

Grammar (operators in any case, AND binds tighter than OR):

    query  := term ("OR" term)*
    term   := factor ("AND" factor)*
    factor := NAME | "(" query ")"

NAME is a permission name (`[a-zA-Z0-9_:\\-.*]+`, at most 280 characters).
Errors name the 1-based character position where the query went wrong.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache

from keyscope_server.permission_match import PermissionSet

__all__ = ["MAX_QUERY_LENGTH", "Query", "QuerySyntaxError", "parse_query"]

MAX_QUERY_LENGTH = 1000
MAX_NAME_LENGTH = 280
MAX_DEPTH = 32

_TOKEN = re.compile(r"\s*(?:(?P<paren>[()])|(?P<word>[a-zA-Z0-9_:\-.*]+)|(?P<bad>\S))")


class QuerySyntaxError(ValueError):
    def __init__(self, position: int, message: str) -> None:
        self.position = position
        self.message = message
        super().__init__(f"at character {position}: {message}")


@dataclass(frozen=True)
class Name:
    name: str


@dataclass(frozen=True)
class AllOf:
    parts: tuple[Node, ...]


@dataclass(frozen=True)
class AnyOf:
    parts: tuple[Node, ...]


Node = Name | AllOf | AnyOf


@dataclass(frozen=True)
class _Token:
    kind: str  # "(", ")", "AND", "OR", "NAME", "END"
    text: str
    position: int  # 1-based


def _tokenize(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    pos = 0
    while True:
        match = _TOKEN.match(text, pos)
        if match is None:  # only white space left
            tokens.append(_Token("END", "", len(text) + 1))
            return tokens
        start = match.start(match.lastgroup or 0) + 1
        if match.group("bad") is not None:
            raise QuerySyntaxError(start, f"unexpected character {match.group('bad')!r}")
        paren = match.group("paren")
        if paren is not None:
            tokens.append(_Token(paren, paren, start))
        else:
            word = match.group("word")
            upper = word.upper()
            if upper in ("AND", "OR"):
                tokens.append(_Token(upper, word, start))
            else:
                if len(word) > MAX_NAME_LENGTH:
                    raise QuerySyntaxError(start, f"permission name longer than {MAX_NAME_LENGTH} characters")
                tokens.append(_Token("NAME", word, start))
        pos = match.end()


class _Parser:
    def __init__(self, tokens: list[_Token]) -> None:
        self.tokens = tokens
        self.index = 0

    def peek(self) -> _Token:
        return self.tokens[self.index]

    def take(self) -> _Token:
        token = self.tokens[self.index]
        self.index += 1
        return token

    def query(self, depth: int) -> Node:
        parts = [self.term(depth)]
        while self.peek().kind == "OR":
            self.take()
            parts.append(self.term(depth))
        return parts[0] if len(parts) == 1 else AnyOf(tuple(parts))

    def term(self, depth: int) -> Node:
        parts = [self.factor(depth)]
        while self.peek().kind == "AND":
            self.take()
            parts.append(self.factor(depth))
        return parts[0] if len(parts) == 1 else AllOf(tuple(parts))

    def factor(self, depth: int) -> Node:
        token = self.take()
        if token.kind == "NAME":
            return Name(token.text)
        if token.kind == "(":
            if depth >= MAX_DEPTH:
                raise QuerySyntaxError(token.position, f"parentheses nested deeper than {MAX_DEPTH}")
            inner = self.query(depth + 1)
            closing = self.take()
            if closing.kind != ")":
                raise QuerySyntaxError(closing.position, f"expected ')' but found {_describe(closing)}")
            return inner
        raise QuerySyntaxError(token.position, f"expected a permission name or '(' but found {_describe(token)}")


def _describe(token: _Token) -> str:
    return "the end of the query" if token.kind == "END" else repr(token.text)


@dataclass(frozen=True)
class Query:
    """A parsed query. `names` lists its permission names in query order, once each."""

    root: Node
    names: tuple[str, ...]

    def missing(self, held: Iterable[str] | PermissionSet) -> list[str]:
        """The query's names that `held` does not grant, or [] if the query is satisfied."""
        if not isinstance(held, PermissionSet):
            held = PermissionSet(held)
        granted = {name: held.grants(name) for name in self.names}
        if _satisfied(self.root, granted):
            return []
        return [name for name in self.names if not granted[name]]


def _satisfied(node: Node, granted: dict[str, bool]) -> bool:
    if isinstance(node, Name):
        return granted[node.name]
    if isinstance(node, AllOf):
        return all(_satisfied(part, granted) for part in node.parts)
    return any(_satisfied(part, granted) for part in node.parts)


@lru_cache(maxsize=1024)
def parse_query(text: str) -> Query:
    """Parse a query; raises QuerySyntaxError. Callers check for the empty query first."""
    if len(text) > MAX_QUERY_LENGTH:
        raise QuerySyntaxError(MAX_QUERY_LENGTH + 1, f"query longer than {MAX_QUERY_LENGTH} characters")
    parser = _Parser(_tokenize(text))
    root = parser.query(0)
    trailing = parser.peek()
    if trailing.kind != "END":
        raise QuerySyntaxError(
            trailing.position, f"expected AND, OR or the end of the query but found {_describe(trailing)}"
        )
    names = tuple(dict.fromkeys(t.text for t in parser.tokens if t.kind == "NAME"))
    return Query(root, names)
