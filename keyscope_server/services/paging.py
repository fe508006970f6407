"""Where a page of a list ordered by id or name starts, and the token of the next (AIP-158), for the servicers of
the List methods (ListAuditEvents, ordered by revision, reads its own)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from keyscope_server.page_tokens import PageTokens
from keyscope_server.validation import Validator

__all__ = ["DEFAULT_PAGE_SIZE", "PageRequest", "page_request"]

DEFAULT_PAGE_SIZE = 50


@dataclass(frozen=True)
class PageRequest:
    """A page asked for: what it lists (the method and its filters, which its token is bound to), the id or name
    it starts after ("": the first page) and how many it may hold."""

    filters: tuple[object, ...]
    after: str
    limit: int

    def next_token(self, tokens: PageTokens, last: str, more: bool) -> str:
        """The next page's token, when more follow the item `last` (its id or name); "" at the end."""
        return tokens.encode(last, self.filters) if more else ""


def page_request(
    check: Validator, tokens: PageTokens, method: str, filters: Sequence[object], page_size: int, page_token: str
) -> PageRequest:
    """The page a List request asks for; its faults, if any, go to `check`. The token is bound to the method as
    well as to its filters, so that one list's token is refused by another."""
    bound = (method, *filters)
    check.page_size(page_size)
    after = ""
    if page_token:
        try:
            after = tokens.decode_name(page_token, bound)
        except ValueError as exc:
            check.add("page_token", f"{exc}: send the next_page_token of the same list, with the same filters")
    return PageRequest(bound, after, page_size or DEFAULT_PAGE_SIZE)
