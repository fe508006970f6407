"""What a store's logical snapshot says is wrong with it, whichever engine holds the data.

Proving that a call changed nothing needs no help here: compare `await store.export_snapshot()` before and
after (see tests/rpc_errors.rejected). `dangling_references` is the engine-neutral soundness check: every
row refers to rows that exist, and the audit trail agrees with the store's revision.
"""

from __future__ import annotations

from keyscope_server.store.snapshot import StoreSnapshot

__all__ = ["dangling_references"]


def dangling_references(snapshot: StoreSnapshot) -> list[str]:
    """Every reference of `snapshot` to a row it does not hold, and every audit revision out of place: [] when
    the snapshot is sound."""
    apis = {api.id for api in snapshot.apis}
    permissions = {permission.id for permission in snapshot.permissions}
    keys = {key.id for key in snapshot.keys}
    roles = {role.id for role in snapshot.roles}
    root_keys = {root_key.id for root_key in snapshot.root_keys}
    problems: list[str] = []

    def check(what: str, ids: set[str], row_id: str, wanted: str) -> None:
        if row_id not in ids:
            problems.append(f"{what} refers to a missing {wanted} {row_id!r}")

    for permission in snapshot.permissions:
        check(f"permission {permission.id}", apis, permission.api_id, "API")
    for key in snapshot.keys:
        check(f"key {key.id}", apis, key.api_id, "API")
    for role in snapshot.roles:
        check(f"role {role.id}", apis, role.api_id, "API")
    for key_id, permission_id in snapshot.key_permissions:
        check(f"key permission {key_id}->{permission_id}", keys, key_id, "key")
        check(f"key permission {key_id}->{permission_id}", permissions, permission_id, "permission")
    for key_id, role_id in snapshot.key_roles:
        check(f"key role {key_id}->{role_id}", keys, key_id, "key")
        check(f"key role {key_id}->{role_id}", roles, role_id, "role")
    for role_id, permission_id in snapshot.role_permissions:
        check(f"role permission {role_id}->{permission_id}", roles, role_id, "role")
        check(f"role permission {role_id}->{permission_id}", permissions, permission_id, "permission")
    for root_key_id, name in snapshot.root_key_permissions:
        check(f"root key permission {root_key_id}->{name}", root_keys, root_key_id, "root key")
    revisions = [event.revision for event in snapshot.audit_events]
    if revisions != sorted(set(revisions)):
        problems.append(f"audit revisions not unique and increasing: {revisions}")
    problems.extend(
        f"audit event of revision {revision} is past the store's revision {snapshot.revision}"
        for revision in revisions
        if revision > snapshot.revision
    )
    return problems
