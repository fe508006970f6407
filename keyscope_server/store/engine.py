"""What an engine gives the shared store (keyscope_server.store.engine_store): transactions, its tables, and lookups.

The rules (authorization, etags, dry runs, the catalog, the change log and the
audit trail, the verification cache) live above this seam and are the same for
every engine; an engine holds only its SQL, its transactions and its
connections. A rule is an `async def` of a `Tables` (the tables of one open
transaction) and plain arguments; the engine runs it whole, inside one
transaction, and commits or rolls back. The rules are passed to `write` and
`read` as values, not called, because an engine may run them elsewhere: the
SQLite engine runs them in its writer process, several to a transaction.

The tables' methods are cut for an engine across a network, where every call
is a round trip: what a rule reads together is one method (a key's API, etag
and state, and the catalog entries the call names: `KeyTable.current`), and so
is what a change writes (the links it replaces, its revision, change-log rows,
etags and audit event: `ChangeLog.record`). SetPermissions is two round trips, or one where the
engine reads every write's key of a batch ahead, at once (`FirstRead`).

Engines raise `keyscope_server.errors` domain errors: StoreFull, StoreUnavailable, and
whatever a rule raised (its transaction rolled back).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from keyscope_server.errors import DomainError
from keyscope_server.store.models import (
    ApiRecord,
    AuditEventRecord,
    AuditPage,
    AuditQuery,
    KeyQuery,
    KeyRecord,
    KeyVerification,
    NewKey,
    PermissionEntry,
    RoleRecord,
    RootKeyGrant,
    RootKeyRecord,
)
from keyscope_server.store.snapshot import ImportProgress, StoreSnapshot
from keyscope_server.store.states import ApiState, KeyState, RoleState, RootKeyState

if TYPE_CHECKING:  # group_commit needs this module's Rule and FirstRead
    from keyscope_server.store.group_commit import GroupCommit

__all__ = [
    "ApiTable",
    "AuditTrail",
    "ChangeLog",
    "ChangeRecord",
    "ChangesSince",
    "Current",
    "Engine",
    "FirstRead",
    "KeyTable",
    "Links",
    "RoleTable",
    "RootKeyTable",
    "Rule",
    "Tables",
]

T = TypeVar("T")
S = TypeVar("S", KeyState, RoleState)


@dataclass(frozen=True)
class Current(Generic[S]):
    """A key or a role as a call finds it: its API, the revision at which it last changed (its etag) and its
    state, read together; and, when asked for by name, those of its API's catalog entries that exist."""

    api_id: str
    etag_revision: int
    state: S
    named_permissions: Mapping[str, PermissionEntry] = field(default_factory=dict)


class ApiTable(Protocol):
    async def insert(self, api_id: str, name: str, now: int) -> None: ...
    async def etag_revision(self, api_id: str) -> int | None:
        """The revision at which the API last changed; None if there is no such API."""

    async def load(self, api_id: str) -> ApiRecord: ...
    async def state(self, api_id: str) -> ApiState: ...
    async def catalog(self, api_id: str) -> list[PermissionEntry]: ...
    async def permissions_named(self, api_id: str, names: Sequence[str]) -> dict[str, PermissionEntry]:
        """Those of the named catalog entries that exist, by name."""

    async def add_permissions(self, api_id: str, entries: Sequence[PermissionEntry], now: int) -> None: ...
    async def describe_permissions(self, descriptions: Sequence[tuple[str, str]]) -> None:
        """Set the description of catalog entries: (permission id, description)."""

    async def remove_permissions(self, permission_ids: Sequence[str]) -> tuple[list[str], list[str]]:
        """Delete catalog entries and every grant of them; the ids of the keys and of the roles that held them."""

    async def ids_after(self, after: str, limit: int) -> list[str]:
        """Up to `limit` ids of APIs, in order, after `after` ("": from the first)."""

    async def catalog_after(self, api_id: str, after: str, limit: int) -> list[PermissionEntry]:
        """Up to `limit` entries of the API's catalog, by name, after the name `after`."""

    async def contents(self, api_id: str) -> tuple[int, int, int]:
        """How many keys, roles and catalog entries the API holds."""

    async def delete(self, api_id: str) -> None:
        """Delete the API and everything in it: its catalog, roles, keys and their links."""


class KeyTable(Protocol):
    async def insert(self, key_id: str, new: NewKey, now: int) -> None: ...
    async def current(self, key_id: str, permission_names: Sequence[str] = ()) -> Current[KeyState] | None:
        """None if there is no such key. With `permission_names`, those of them in the key's API's catalog too."""

    async def load(self, key_id: str) -> KeyRecord: ...
    async def state(self, key_id: str) -> KeyState: ...
    async def update(self, key_id: str, name: str, enabled: bool, expires_ms: int | None) -> None: ...
    async def delete(self, key_id: str) -> None: ...
    async def add_permissions(self, key_id: str, permission_ids: Sequence[str]) -> None: ...
    async def add_roles(self, key_id: str, role_ids: Sequence[str]) -> None: ...
    async def ids(self, query: KeyQuery) -> list[str]:
        """The ids of the keys ListKeys lists (KeyQuery), in order, at most `query.limit`."""


class RoleTable(Protocol):
    async def insert(self, role_id: str, api_id: str, name: str, description: str, now: int) -> None: ...
    async def current(self, role_id: str, permission_names: Sequence[str] = ()) -> Current[RoleState] | None:
        """As KeyTable.current."""

    async def named(self, api_id: str, names: Sequence[str]) -> dict[str, str]:
        """Those of the named roles of the API that exist: name -> id."""

    async def load(self, role_id: str) -> RoleRecord: ...
    async def state(self, role_id: str) -> RoleState: ...
    async def add_permissions(self, role_id: str, permission_ids: Sequence[str]) -> None: ...
    async def ids_after(self, api_id: str, after: str, limit: int) -> list[str]:
        """Up to `limit` ids of the API's roles, ordered by name, after the role named `after`."""

    async def holders(self, role_id: str) -> list[str]:
        """The ids of the keys that have the role."""

    async def delete(self, role_id: str) -> None:
        """Delete the role and its links to keys and permissions."""


class RootKeyTable(Protocol):
    async def insert(
        self,
        root_key_id: str,
        name: str,
        secret_hash: bytes,
        permissions: Sequence[str],
        expires_ms: int | None,
        now: int,
    ) -> None: ...
    async def state(self, root_key_id: str) -> RootKeyState | None: ...
    async def set_enabled(self, root_key_id: str, enabled: bool) -> None: ...
    async def delete(self, root_key_id: str) -> None: ...
    async def all(self) -> list[RootKeyRecord]: ...


@dataclass(frozen=True)
class Links:
    """An owner's links of one kind, all of them, as a change leaves them. The kinds: "key_permissions" (a key's
    direct permissions), "key_roles" and "role_permissions"."""

    kind: str
    owner_id: str
    target_ids: Sequence[str]


@dataclass(frozen=True)
class ChangeRecord:
    """What one change writes under the revision it takes (ChangeLog.record)."""

    # The change log's rows, what caches must drop: ("key", key id), ("api", api id: every key of the API),
    # ("root", root key id).
    cached: Sequence[tuple[str, str]]
    # The rows marked as changed at the revision (their etag) and at `now`: "api", "key" or "role" -> their ids.
    touched: Mapping[str, Sequence[str]]
    now: int
    event: AuditEventRecord  # its revision (0 here) is the one taken
    # Links the change replaces: written with the rest, which on an engine across a network is one round trip.
    replaced: Sequence[Links] = ()


class ChangeLog(Protocol):
    """The store-wide revision, and what each revision changed that caches may hold."""

    async def revision(self) -> int: ...
    async def page_token_key(self) -> bytes:
        """The store's key for signing page tokens, made with the store's schema."""

    async def record(self, change: ChangeRecord) -> int:
        """Count one change and write what it records (and the links it replaces): the new revision, which no
        other transaction can take or commit before this one."""

    async def prune(self, through_revision: int) -> None: ...


class AuditTrail(Protocol):
    async def page(self, query: AuditQuery) -> AuditPage: ...


class Tables(Protocol):
    """The tables of one open transaction."""

    @property
    def apis(self) -> ApiTable: ...
    @property
    def keys(self) -> KeyTable: ...
    @property
    def roles(self) -> RoleTable: ...
    @property
    def root_keys(self) -> RootKeyTable: ...
    @property
    def changes(self) -> ChangeLog: ...
    @property
    def audit(self) -> AuditTrail: ...


# A rule: run whole inside one transaction, on that transaction's tables.
Rule = Callable[..., Awaitable[T]]


@dataclass(frozen=True)
class FirstRead:
    """What a write's rule reads first, when the store knows it: `KeyTable.current(key_id, permission_names)`.
    An engine across a network may read it ahead, for every write of a batch in one round trip; an engine
    that does not need to ignores it. The rule reads it all the same, and gets what it would have read."""

    key_id: str
    permission_names: tuple[str, ...] = ()


@dataclass(frozen=True)
class ChangesSince:
    """The change log after a revision: the store's revision now, whether the log still holds every change
    after the asked revision (it is pruned), and those changes as (revision, kind, id)."""

    current: int
    complete: bool
    changes: list[tuple[int, str, str]]


class Engine(Protocol):
    batches: GroupCommit  # the engine's write batches (its `write`s go through them), for their observer

    async def write(self, rule: Rule[T], *args: Any, dry_run: bool = False, first_read: FirstRead | None = None) -> T:
        """`await rule(tables, *args)` in a write transaction, committed before this returns (rolled back instead
        with `dry_run`, or when the rule raises). `first_read`: what the rule reads first, if known."""

    async def read(self, rule: Rule[T], *args: Any) -> T:
        """`await rule(tables, *args)` in one consistent snapshot of committed data."""

    # The hot path: one lookup each, no transaction around it.
    async def find_key(self, secret_hash: bytes) -> KeyVerification | None: ...
    async def find_root_key(self, secret_hash: bytes) -> RootKeyGrant | None: ...

    # Freshness: what the verification cache needs to never serve what a commit changed.
    async def commit_mark(self) -> Hashable:
        """A mark equal to an earlier one only if nothing was committed in between, by anyone."""

    async def changes_since(self, revision: int) -> ChangesSince: ...

    # The whole store.
    async def export_snapshot(self) -> StoreSnapshot: ...
    async def import_snapshot(self, snapshot: StoreSnapshot, progress: ImportProgress | None = None) -> None:
        """Write every row of `snapshot` into this store, which must be empty (StoreUnavailable if not), in one
        transaction; `progress` hears, table by table, how many rows are written (it may be called from another
        thread)."""

    async def probe(self) -> DomainError | None:
        """What keeps the engine from taking writes now (StoreFull, StoreUnavailable), or None."""

    async def close(self) -> None: ...
