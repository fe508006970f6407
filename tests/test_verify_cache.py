"""The verification cache: what it keeps, what a change drops, and its bounds."""

from __future__ import annotations

from keyscope_server.store.models import KeyVerification, RootKeyGrant
from keyscope_server.store.verify_cache import CacheLimits, VerifyCache


def key(
    n: int, revision: int, api: str = "api_1", permissions: tuple[str, ...] = ("documents.read",)
) -> KeyVerification:
    return KeyVerification(f"key_{n}", api, True, None, permissions, (), revision)


def h(n: int) -> bytes:
    return n.to_bytes(32, "big")


def cache_at(revision: int, limits: CacheLimits | None = None) -> VerifyCache:
    cache = VerifyCache(limits or CacheLimits())
    cache.apply(revision, True, [])
    return cache


def test_ok_nothing_is_kept_before_the_first_catch_up() -> None:
    cache = VerifyCache(CacheLimits())
    cache.put_key(h(1), key(1, 5))
    assert cache.key(h(1)) is None


def test_ok_kept_until_a_change_to_the_key() -> None:
    cache = cache_at(10)
    cache.put_key(h(1), key(1, 10))
    cache.put_key(h(2), key(2, 10))
    cache.apply(11, True, [(11, "key", "key_1")])
    assert cache.key(h(1)) is None
    assert cache.key(h(2)) == key(2, 10)
    assert cache.seen == 11


def test_ok_a_change_to_an_api_drops_all_its_keys() -> None:
    cache = cache_at(10)
    cache.put_key(h(1), key(1, 10, api="api_1"))
    cache.put_key(h(2), key(2, 10, api="api_2"))
    cache.apply(12, True, [(12, "api", "api_1")])
    assert (cache.key(h(1)), cache.key(h(2))) == (None, key(2, 10, api="api_2"))


def test_ok_a_read_older_than_a_change_already_applied_is_not_kept() -> None:
    # A miss read at revision 10 arrives after the change of revision 11 was applied: it is stale.
    cache = cache_at(10)
    cache.apply(11, True, [(11, "key", "key_1")])
    cache.put_key(h(1), key(1, 10))
    assert cache.key(h(1)) is None
    # A read older than an unrelated change is fine.
    cache.put_key(h(2), key(2, 10))
    assert cache.key(h(2)) == key(2, 10)


def test_ok_an_incomplete_change_log_starts_afresh() -> None:
    cache = cache_at(10)
    cache.put_key(h(1), key(1, 10))
    cache.apply(500_000, False, [])
    assert cache.key(h(1)) is None and len(cache) == 0 and cache.seen == 500_000


def test_ok_root_keys_dropped_by_their_change() -> None:
    cache = cache_at(3)
    grant = RootKeyGrant("root_1", ("api.*.verify_key",), True, None, 3)
    cache.put_root(h(9), grant)
    assert cache.root(h(9)) == grant
    cache.apply(4, True, [(4, "root", "root_1")])
    assert cache.root(h(9)) is None


def test_ok_bounded_in_entries_least_recently_used_first() -> None:
    cache = cache_at(1, CacheLimits(entries=100, bytes=10**9))
    for n in range(100):
        cache.put_key(h(n), key(n, 1))
    assert cache.key(h(0)) is not None  # now the most recently used
    for n in range(100, 150):
        cache.put_key(h(n), key(n, 1))
    assert len(cache) == 100
    assert cache.key(h(0)) is not None and cache.key(h(1)) is None


def test_ok_bounded_in_bytes() -> None:
    cache = cache_at(1, CacheLimits(entries=10**6, bytes=200_000))
    many = tuple(f"perm.{i}" for i in range(50))
    for n in range(1000):
        cache.put_key(h(n), key(n, 1, permissions=many))
    assert 0 < cache.used_bytes <= 200_000
    assert 0 < len(cache) < 1000


def test_ok_an_unknown_secret_is_kept_while_the_revision_stands() -> None:
    cache = cache_at(10)
    cache.put_unknown(h(1), 10)
    cache.apply(10, True, [])  # a catch-up that found no new commit
    assert cache.is_unknown(h(1))
    assert not cache.is_unknown(h(2))


def test_ok_unknown_secrets_dropped_when_the_revision_moves() -> None:
    # A key creation names no cached key in the change log: any new revision may be one.
    cache = cache_at(10)
    cache.put_unknown(h(1), 10)
    cache.apply(11, True, [])
    assert not cache.is_unknown(h(1))


def test_ok_an_unknown_found_at_a_revision_the_cache_has_left_is_not_kept() -> None:
    # The lookup began at 10; a catch-up to 11 (which may have created the key) ran before its answer came.
    cache = cache_at(10)
    cache.apply(11, True, [])
    cache.put_unknown(h(1), 10)
    assert not cache.is_unknown(h(1))


def test_ok_nothing_unknown_is_kept_before_the_first_catch_up() -> None:
    cache = VerifyCache(CacheLimits())
    cache.put_unknown(h(1), -1)
    assert not cache.is_unknown(h(1))


def test_ok_unknown_secrets_bounded_least_recently_used_first() -> None:
    cache = cache_at(10, CacheLimits(unknown=3))
    for n in (1, 2, 3):
        cache.put_unknown(h(n), 10)
    assert cache.is_unknown(h(1))  # used: h(2) is now the oldest
    cache.put_unknown(h(4), 10)
    assert [cache.is_unknown(h(n)) for n in (1, 2, 3, 4)] == [True, False, True, True]
    assert cache.unknown_count == 3
