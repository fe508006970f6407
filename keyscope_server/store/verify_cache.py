"""What VerifyKey and authentication read of keys and root keys, kept until the change log says otherwise.

Store-agnostic: the store reports, before each use, the changes committed since
the revision the cache has caught up to (`apply`), so an entry is never
served after a change to it was committed, whichever process committed it.
An entry read at revision R is taken in only if no change applied after R
touched it (`put_key`, `put_root`). Bounded in entries and in bytes; least
recently used entries go first.

Unknown secrets (VerifyKey lookups that found no key) are kept too, apart and
bounded on their own (`put_unknown`), so that a guess repeated costs no store
read. The change log does not name a key that is created (no cache can hold
it), so an unknown entry holds only while the revision stands still: every
revision the cache catches up to drops them all, and one found at a revision
the cache has since left is not taken in. A key created a moment ago is
therefore never answered from here: its commit moved the revision, which the
store's catch-up before every call sees, whichever process committed it.

It counts its hits, misses and evictions in plain attributes (an increment on the hot path, nothing more), which
`stats()` hands to whoever reports them (keyscope_server.metrics); the store layer knows no metrics library.
"""

from __future__ import annotations

import sys
from collections import OrderedDict, deque
from dataclasses import dataclass, replace

from keyscope_server.store.models import KeyVerification, RootKeyGrant

__all__ = ["DEFAULT_LIMITS", "CacheLimits", "CacheStats", "Change", "VerifyCache"]

Change = tuple[int, str, str]  # (revision, kind, id); kinds: "key" (key id), "api" (all its keys), "root"

_ENTRY_OVERHEAD = 400  # bytes of Python objects around an entry's strings, measured roughly


@dataclass(frozen=True)
class CacheLimits:
    entries: int = 100_000
    bytes: int = 64 * 1024 * 1024
    unknown: int = 50_000  # unknown secrets' hashes, about 150 bytes each


DEFAULT_LIMITS = CacheLimits()


@dataclass(frozen=True)
class CacheStats:
    """What a cache has done since it was made (lookups that found an entry or not, entries dropped to stay
    within its limits), by kind of entry, and what it holds now."""

    key_hits: int = 0
    key_misses: int = 0
    key_evictions: int = 0
    root_hits: int = 0
    root_misses: int = 0
    root_evictions: int = 0
    keys: int = 0
    root_keys: int = 0
    bytes: int = 0


def _size(key: KeyVerification) -> int:
    strings = (key.key_id, key.api_id, *key.permissions, *key.roles)
    return _ENTRY_OVERHEAD + sum(len(s) + 50 for s in strings)


class VerifyCache:
    def __init__(self, limits: CacheLimits, remembered_changes: int = 10_000) -> None:
        self.limits = limits
        self.seen = -1  # every change up to this revision is applied; -1: none yet
        self._keys: OrderedDict[bytes, tuple[KeyVerification, int]] = OrderedDict()
        self._hash_of_key: dict[str, bytes] = {}
        self._hashes_of_api: dict[str, set[bytes]] = {}
        self._roots: OrderedDict[bytes, RootKeyGrant] = OrderedDict()
        self._unknown: OrderedDict[bytes, None] = OrderedDict()
        self._bytes = 0
        self._recent: deque[Change] = deque(maxlen=remembered_changes)
        self._recent_from = -1  # _recent holds every change applied after this revision
        self.key_hits = self.key_misses = self.key_evictions = 0
        self.root_hits = self.root_misses = self.root_evictions = 0

    def __len__(self) -> int:
        return len(self._keys) + len(self._roots)

    @property
    def used_bytes(self) -> int:
        """The entries' estimated size, which `limits.bytes` bounds."""
        return self._bytes

    def stats(self) -> CacheStats:
        return CacheStats(
            key_hits=self.key_hits,
            key_misses=self.key_misses,
            key_evictions=self.key_evictions,
            root_hits=self.root_hits,
            root_misses=self.root_misses,
            root_evictions=self.root_evictions,
            keys=len(self._keys),
            root_keys=len(self._roots),
            bytes=self._bytes,
        )

    def apply(self, current: int, complete: bool, changes: list[Change]) -> None:
        """Catch up to `current`. `complete` is False when the store no longer holds every change since `seen`."""
        if self.seen < 0 or not complete:
            self._clear(current)
            return
        if current != self.seen:
            self._unknown.clear()  # a key may have been created: nothing unknown before is known to be now
        for change in changes:
            if len(self._recent) == self._recent.maxlen:
                self._recent_from = self._recent[0][0]
            self._recent.append(change)
            self._forget(change)
        self.seen = max(self.seen, current)

    def key(self, secret_hash: bytes) -> KeyVerification | None:
        entry = self._keys.get(secret_hash)
        if entry is None:
            self.key_misses += 1
            return None
        self.key_hits += 1
        self._keys.move_to_end(secret_hash)
        return entry[0]

    def root(self, secret_hash: bytes) -> RootKeyGrant | None:
        grant = self._roots.get(secret_hash)
        if grant is None:
            self.root_misses += 1
            return None
        self.root_hits += 1
        self._roots.move_to_end(secret_hash)
        return grant

    def is_unknown(self, secret_hash: bytes) -> bool:
        """Whether a lookup at the current revision found no key with this secret."""
        if secret_hash not in self._unknown:
            return False
        self._unknown.move_to_end(secret_hash)
        return True

    def put_unknown(self, secret_hash: bytes, revision: int) -> None:
        """Keep that no key has this secret, as a lookup begun when the cache was at `revision` found."""
        if self.seen < 0 or revision != self.seen:
            return  # the cache has caught up past the lookup since: a key may have been created in between
        self._unknown[secret_hash] = None
        self._unknown.move_to_end(secret_hash)
        while len(self._unknown) > self.limits.unknown:
            self._unknown.popitem(last=False)

    @property
    def unknown_count(self) -> int:
        return len(self._unknown)

    def put_key(self, secret_hash: bytes, key: KeyVerification) -> None:
        if not self._unchanged_since(key.revision, {("key", key.key_id), ("api", key.api_id)}):
            return
        self._drop_key(secret_hash)
        # The names many keys share (their API's id, the catalog's permissions, its roles) kept once, not once a key:
        # read from the store, each row brings strings of its own.
        key = replace(
            key,
            api_id=sys.intern(key.api_id),
            permissions=tuple(map(sys.intern, key.permissions)),
            roles=tuple(map(sys.intern, key.roles)),
        )
        size = _size(key)
        self._keys[secret_hash] = (key, size)
        self._hash_of_key[key.key_id] = secret_hash
        self._hashes_of_api.setdefault(key.api_id, set()).add(secret_hash)
        self._bytes += size
        while len(self) > self.limits.entries or self._bytes > self.limits.bytes:
            if self._keys:
                self._drop_key(next(iter(self._keys)))
                self.key_evictions += 1
            else:
                self._roots.popitem(last=False)
                self.root_evictions += 1

    def put_root(self, secret_hash: bytes, grant: RootKeyGrant) -> None:
        if not self._unchanged_since(grant.revision, {("root", grant.id)}):
            return
        self._roots[secret_hash] = grant
        while len(self._roots) > max(1, self.limits.entries // 100):
            self._roots.popitem(last=False)
            self.root_evictions += 1

    def _unchanged_since(self, revision: int, targets: set[tuple[str, str]]) -> bool:
        if self.seen < 0:
            return False
        if revision >= self.seen:
            return True
        if revision < self._recent_from:
            return False  # what changed in between is no longer known
        return not any(r > revision and (kind, id_) in targets for r, kind, id_ in self._recent)

    def _forget(self, change: Change) -> None:
        _, kind, id_ = change
        if kind == "key":
            secret_hash = self._hash_of_key.get(id_)
            if secret_hash is not None:
                self._drop_key(secret_hash)
        elif kind == "api":
            for secret_hash in list(self._hashes_of_api.get(id_, ())):
                self._drop_key(secret_hash)
        elif kind == "root":
            for secret_hash in [h for h, g in self._roots.items() if g.id == id_]:
                del self._roots[secret_hash]

    def _drop_key(self, secret_hash: bytes) -> None:
        entry = self._keys.pop(secret_hash, None)
        if entry is None:
            return
        key, size = entry
        self._bytes -= size
        if self._hash_of_key.get(key.key_id) == secret_hash:
            del self._hash_of_key[key.key_id]
        hashes = self._hashes_of_api.get(key.api_id)
        if hashes is not None:
            hashes.discard(secret_hash)
            if not hashes:
                del self._hashes_of_api[key.api_id]

    def _clear(self, current: int) -> None:
        self._keys.clear()
        self._hash_of_key.clear()
        self._hashes_of_api.clear()
        self._roots.clear()
        self._unknown.clear()
        self._bytes = 0
        self._recent.clear()
        self._recent_from = current
        self.seen = current
