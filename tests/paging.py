"""Paging as the List RPCs' tests follow it (AIP-158): every page to the end, and page tokens made by hand."""

from __future__ import annotations

import base64
import json
from collections.abc import Awaitable, Callable, Sequence

from keyscope_server.services.paging import DEFAULT_PAGE_SIZE

__all__ = ["every_page", "flat", "unsigned_token"]

# One page: the page size and token asked for -> the names (ids, values) the page holds and its next_page_token.
FetchPage = Callable[[int, str], Awaitable[tuple[Sequence[str], str]]]


async def every_page(fetch: FetchPage, page_size: int, page_token: str = "") -> list[list[str]]:
    """The names of every page from `page_token` on, following next_page_token to the end; no page over its size."""
    pages: list[list[str]] = []
    for _ in range(100):
        names, page_token = await fetch(page_size, page_token)
        assert len(names) <= (page_size or DEFAULT_PAGE_SIZE)  # 0: the default
        pages.append(list(names))
        if not page_token:
            return pages
    raise AssertionError("next_page_token never came back empty")


def flat(pages: list[list[str]]) -> list[str]:
    return [name for page in pages for name in page]


def unsigned_token(payload: object) -> str:
    """A page token's JSON without the server's signature."""
    return base64.urlsafe_b64encode(json.dumps(payload).encode()).decode().rstrip("=")
