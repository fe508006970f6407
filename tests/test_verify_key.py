"""KeyService.VerifyKey: answers (with status OK), the permission query, the caller's scope, immediate consistency."""

from __future__ import annotations

import grpc
import pytest

from keyscope.v1 import apis_pb2, keys_pb2, permissions_pb2, roles_pb2
from keyscope_server.cli import EXAMPLE_ROOT_KEY
from keyscope_server.store import Store
from tests.client import Caller, from_now
from tests.conftest import MakeCaller
from tests.rpc_errors import field_violations

pytestmark = pytest.mark.asyncio

Code = keys_pb2.VerifyKeyResponse.Code


async def _expire(admin: Caller, key_id: str) -> None:
    # CreateKey refuses past expiries; UpdateKey may set one, which expires the key at once.
    await admin.keys.UpdateKey(keys_pb2.UpdateKeyRequest(key_id=key_id, expire_time=from_now(-60)), metadata=admin.md)


async def _disable(admin: Caller, key_id: str) -> None:
    await admin.keys.UpdateKey(keys_pb2.UpdateKeyRequest(key_id=key_id, enabled=False), metadata=admin.md)


# -- ok: the answer -----------------------------------------------------------------------------


async def test_ok_valid_key_without_query(admin: Caller) -> None:
    api = await admin.make_api()
    key, secret = await admin.make_key(api.id, ["documents.write", "documents.read"])

    answer = await admin.verify(secret)

    assert answer.valid and answer.code == Code.CODE_VALID
    assert (answer.key_id, answer.api_id) == (key.id, api.id)
    assert list(answer.permissions) == ["documents.read", "documents.write"]
    assert list(answer.roles) == [] and list(answer.missing_permissions) == []
    assert not answer.HasField("expire_time")


async def test_ok_effective_permissions_are_direct_and_roles_sorted_and_unique(admin: Caller) -> None:
    api = await admin.make_api()
    await admin.make_role(api.id, "writer", ["documents.write", "documents.read"])
    await admin.make_role(api.id, "auditor", ["audit.read"])
    _, secret = await admin.make_key(api.id, ["zeta", "documents.read"], ["writer", "auditor"])

    answer = await admin.verify(secret)

    assert answer.code == Code.CODE_VALID
    assert list(answer.permissions) == ["audit.read", "documents.read", "documents.write", "zeta"]
    assert list(answer.roles) == ["auditor", "writer"]


async def test_ok_reports_expire_time(admin: Caller) -> None:
    api = await admin.make_api()
    expiry = from_now(3600)
    _, secret = await admin.make_key(api.id, expire_time=expiry)

    answer = await admin.verify(secret)

    assert answer.code == Code.CODE_VALID
    assert answer.expire_time == expiry


@pytest.mark.parametrize("query", ["", " ", " \t\n  "])
async def test_ok_empty_query_is_no_query(admin: Caller, query: str) -> None:
    api = await admin.make_api()
    _, secret = await admin.make_key(api.id)

    answer = await admin.verify(secret, query)

    assert answer.valid and answer.code == Code.CODE_VALID


# -- ok: the query ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("held", "query", "missing"),
    [
        (["documents.read"], "documents.read", []),
        (["documents.read"], "documents.write", ["documents.write"]),
        (["a", "b"], "a AND b", []),
        (["a"], "a AND b", ["b"]),
        (["b"], "a OR b", []),
        ([], "a OR b", ["a", "b"]),
        (["a"], "a and b", ["b"]),  # operators in any case
        (["b"], "a oR b", []),
        # AND binds tighter than OR: these hold only as a OR (b AND c) and (a AND b) OR c.
        (["a"], "a OR b AND c", []),
        (["c"], "a AND b OR c", []),
        (["b"], "a OR b AND c", ["a", "c"]),
        (["a"], "a AND (b OR c)", ["b", "c"]),
        (["a", "c"], "a AND (b OR c)", []),
        ([], "zeta AND alpha AND mid", ["zeta", "alpha", "mid"]),  # query order, not sorted
        ([], "x AND x OR y AND x", ["x", "y"]),  # once each
        (["x"], "x AND y AND x", ["y"]),
        (["a", "b"], "  ( a\tAND\nb )  ", []),
        (["read:users", "x-y_z"], "read:users AND x-y_z", []),
        (["documents.read"], "Documents.read", ["Documents.read"]),  # case-sensitive names
        # Wildcards in the key's permissions: `*` is one whole segment.
        (["documents.*"], "documents.read", []),
        (["documents.*"], "documents.read.own", ["documents.read.own"]),
        (["documents.*"], "documents", ["documents"]),
        (["*.read"], "documents.read AND billing.read", []),
        (["doc*"], "documents", ["documents"]),  # `*` inside a segment is a literal
        # A wildcard in the query is met only by a grant that matches it segment-wise.
        (["documents.*"], "documents.*", []),
        (["documents.read"], "documents.*", ["documents.*"]),
        (["*.*"], "documents.*", []),
    ],
)
async def test_ok_query(admin: Caller, held: list[str], query: str, missing: list[str]) -> None:
    api = await admin.make_api()
    _, secret = await admin.make_key(api.id, held)

    answer = await admin.verify(secret, query)

    if missing:
        assert (answer.valid, answer.code) == (False, Code.CODE_INSUFFICIENT_PERMISSIONS)
    else:
        assert (answer.valid, answer.code) == (True, Code.CODE_VALID)
    assert list(answer.missing_permissions) == missing


async def test_ok_insufficient_permissions_still_describes_the_key(admin: Caller) -> None:
    api = await admin.make_api()
    await admin.make_role(api.id, "reader", ["documents.read"])
    key, secret = await admin.make_key(api.id, ["billing.read"], ["reader"])

    answer = await admin.verify(secret, "documents.read AND documents.write")

    assert answer.code == Code.CODE_INSUFFICIENT_PERMISSIONS and not answer.valid
    assert (answer.key_id, answer.api_id) == (key.id, api.id)
    assert list(answer.permissions) == ["billing.read", "documents.read"]
    assert list(answer.roles) == ["reader"]
    assert list(answer.missing_permissions) == ["documents.write"]


async def test_ok_wildcard_granted_through_a_role(admin: Caller) -> None:
    api = await admin.make_api()
    await admin.make_role(api.id, "editor", ["documents.*"])
    _, secret = await admin.make_key(api.id, roles=["editor"])

    answer = await admin.verify(secret, "documents.read AND documents.write")

    assert answer.code == Code.CODE_VALID


async def test_ok_parentheses_nested_32_deep(admin: Caller) -> None:
    api = await admin.make_api()
    _, secret = await admin.make_key(api.id, ["a"])

    answer = await admin.verify(secret, "(" * 32 + "a" + ")" * 32)

    assert answer.code == Code.CODE_VALID


async def test_ok_query_of_1000_characters(admin: Caller) -> None:
    api = await admin.make_api()
    _, secret = await admin.make_key(api.id, ["p" * 95])
    query = " OR ".join(["p" * 95] * 10).ljust(1000)
    assert len(query) == 1000

    answer = await admin.verify(secret, query)

    assert answer.code == Code.CODE_VALID


async def test_ok_key_of_512_characters_is_looked_up(admin: Caller) -> None:
    answer = await admin.verify("k" * 512)

    assert answer.code == Code.CODE_NOT_FOUND


# -- ok: codes and their precedence ------------------------------------------------------------------


async def test_ok_disabled(admin: Caller) -> None:
    api = await admin.make_api()
    key, secret = await admin.make_key(api.id, ["a"], enabled=False)

    answer = await admin.verify(secret)

    assert (answer.valid, answer.code) == (False, Code.CODE_DISABLED)
    assert answer.key_id == key.id


async def test_ok_expired(admin: Caller) -> None:
    api = await admin.make_api()
    key, secret = await admin.make_key(api.id, ["a"])
    await _expire(admin, key.id)

    answer = await admin.verify(secret)

    assert (answer.valid, answer.code) == (False, Code.CODE_EXPIRED)
    assert answer.key_id == key.id and answer.HasField("expire_time")


async def test_ok_disabled_wins_over_expired_and_insufficient(admin: Caller) -> None:
    api = await admin.make_api()
    key, secret = await admin.make_key(api.id, enabled=False)
    await _expire(admin, key.id)

    answer = await admin.verify(secret, "missing.permission")

    assert answer.code == Code.CODE_DISABLED
    assert list(answer.missing_permissions) == []


async def test_ok_expired_wins_over_insufficient(admin: Caller) -> None:
    api = await admin.make_api()
    key, secret = await admin.make_key(api.id)
    await _expire(admin, key.id)

    answer = await admin.verify(secret, "missing.permission")

    assert answer.code == Code.CODE_EXPIRED
    assert list(answer.missing_permissions) == []


async def test_ok_verifying_changes_nothing(admin: Caller, store: Store) -> None:
    api = await admin.make_api()
    _, secret = await admin.make_key(api.id, ["a"])
    before = await store.export_snapshot()

    await admin.verify(secret, "a OR b")
    await admin.verify(secret, "b")

    assert await store.export_snapshot() == before


# -- ok: every acknowledged change shows in the very next VerifyKey ------------------------------------


async def test_ok_consistent_after_set_permissions(admin: Caller) -> None:
    api = await admin.make_api()
    key, secret = await admin.make_key(api.id, ["a"])

    await admin.keys.SetPermissions(keys_pb2.SetPermissionsRequest(key_id=key.id, permissions=["b"]), metadata=admin.md)

    assert (await admin.verify(secret, "b")).code == Code.CODE_VALID
    assert list((await admin.verify(secret, "a")).missing_permissions) == ["a"]


async def test_ok_consistent_after_update_scopes(admin: Caller) -> None:
    api = await admin.make_api(["a", "b"])
    await admin.make_role(api.id, "r", ["a"])
    _, secret = await admin.make_key(api.id, ["a", "b"], ["r"])

    # Dropping `a` from the catalog takes it from the key and from its role.
    request = apis_pb2.UpdateScopesRequest(api_id=api.id, scopes=[permissions_pb2.Scope(value="b")])
    await admin.apis.UpdateScopes(request, metadata=admin.md)

    answer = await admin.verify(secret, "a")
    assert answer.code == Code.CODE_INSUFFICIENT_PERMISSIONS
    assert list(answer.permissions) == ["b"]


async def test_ok_consistent_after_set_roles(admin: Caller) -> None:
    api = await admin.make_api()
    await admin.make_role(api.id, "reader", ["documents.read"])
    key, secret = await admin.make_key(api.id)

    await admin.keys.SetRoles(keys_pb2.SetRolesRequest(key_id=key.id, roles=["reader"]), metadata=admin.md)
    assert (await admin.verify(secret, "documents.read")).code == Code.CODE_VALID

    await admin.keys.SetRoles(keys_pb2.SetRolesRequest(key_id=key.id, roles=[]), metadata=admin.md)
    assert (await admin.verify(secret, "documents.read")).code == Code.CODE_INSUFFICIENT_PERMISSIONS


async def test_ok_consistent_after_set_role_permissions(admin: Caller) -> None:
    api = await admin.make_api()
    role = await admin.make_role(api.id, "r", ["a"])
    _, secret = await admin.make_key(api.id, roles=["r"])

    await admin.roles.SetRolePermissions(
        roles_pb2.SetRolePermissionsRequest(role_id=role.id, permissions=["b"]), metadata=admin.md
    )

    assert (await admin.verify(secret, "b")).code == Code.CODE_VALID
    assert (await admin.verify(secret, "a")).code == Code.CODE_INSUFFICIENT_PERMISSIONS


async def test_ok_consistent_after_update_key_enabled(admin: Caller) -> None:
    api = await admin.make_api()
    key, secret = await admin.make_key(api.id)

    await _disable(admin, key.id)
    assert (await admin.verify(secret)).code == Code.CODE_DISABLED

    await admin.keys.UpdateKey(keys_pb2.UpdateKeyRequest(key_id=key.id, enabled=True), metadata=admin.md)
    assert (await admin.verify(secret)).code == Code.CODE_VALID


async def test_ok_consistent_after_update_key_expiry(admin: Caller) -> None:
    api = await admin.make_api()
    key, secret = await admin.make_key(api.id, expire_time=from_now(3600))

    await _expire(admin, key.id)
    assert (await admin.verify(secret)).code == Code.CODE_EXPIRED

    await admin.keys.UpdateKey(keys_pb2.UpdateKeyRequest(key_id=key.id, clear_expire_time=True), metadata=admin.md)
    answer = await admin.verify(secret)
    assert answer.code == Code.CODE_VALID and not answer.HasField("expire_time")


async def test_ok_consistent_after_delete_key(admin: Caller) -> None:
    api = await admin.make_api()
    key, secret = await admin.make_key(api.id)

    await admin.keys.DeleteKey(keys_pb2.DeleteKeyRequest(key_id=key.id), metadata=admin.md)

    answer = await admin.verify(secret)
    assert (answer.valid, answer.code, answer.key_id) == (False, Code.CODE_NOT_FOUND, "")


# -- not found: answered with status OK -----------------------------------------------------------------


async def test_not_found_unknown_key(admin: Caller) -> None:
    answer = await admin.verify("no_such_key_0123456789")

    assert answer == keys_pb2.VerifyKeyResponse(valid=False, code=Code.CODE_NOT_FOUND)


async def test_not_found_root_key_secret_is_not_a_key(admin: Caller) -> None:
    answer = await admin.verify(admin.root_key)

    assert answer == keys_pb2.VerifyKeyResponse(valid=False, code=Code.CODE_NOT_FOUND)


@pytest.mark.parametrize(
    "permissions",
    [
        ["api.{own}.verify_key"],
        ["api.{own}.verify_key", "api.{other}.read_key", "api.{other}.update_key"],
    ],
)
async def test_not_found_key_of_an_api_the_caller_may_not_verify(
    admin: Caller, make_caller: MakeCaller, permissions: list[str]
) -> None:
    own, other = await admin.make_api(), await admin.make_api()
    _, own_secret = await admin.make_key(own.id, ["a"])
    _, other_secret = await admin.make_key(other.id, ["a"])
    caller = await make_caller([p.format(own=own.id, other=other.id) for p in permissions])

    assert (await caller.verify(own_secret)).code == Code.CODE_VALID
    # Exactly the answer for a key that does not exist: nothing about the key leaks.
    assert await caller.verify(other_secret, "a") == await caller.verify("no_such_key_0123456789", "a")
    assert await caller.verify(other_secret) == keys_pb2.VerifyKeyResponse(valid=False, code=Code.CODE_NOT_FOUND)


async def test_not_found_wins_over_disabled(admin: Caller, make_caller: MakeCaller) -> None:
    own, other = await admin.make_api(), await admin.make_api()
    _, secret = await admin.make_key(other.id, enabled=False)
    caller = await make_caller([f"api.{own.id}.verify_key"])

    assert (await caller.verify(secret)).code == Code.CODE_NOT_FOUND


async def test_not_found_caller_without_verify_key(admin: Caller, make_caller: MakeCaller) -> None:
    api = await admin.make_api()
    _, secret = await admin.make_key(api.id)
    caller = await make_caller([p for p in EXAMPLE_ROOT_KEY if not p.endswith(".verify_key")])

    assert (await caller.verify(secret)).code == Code.CODE_NOT_FOUND


async def test_ok_wildcard_root_key_verifies_every_api(admin: Caller, make_caller: MakeCaller) -> None:
    first, second = await admin.make_api(), await admin.make_api()
    _, first_secret = await admin.make_key(first.id)
    _, second_secret = await admin.make_key(second.id)
    caller = await make_caller(["api.*.verify_key"])

    assert (await caller.verify(first_secret)).code == Code.CODE_VALID
    assert (await caller.verify(second_secret)).code == Code.CODE_VALID


# -- invalid argument --------------------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["", "k" * 513])
async def test_invalid_argument_key(admin: Caller, key: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await admin.verify(key)

    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    violations = field_violations(e.value)
    assert list(violations) == ["key"]
    assert "k" * 20 not in violations["key"]  # a secret is never echoed


@pytest.mark.parametrize(
    ("query", "position"),
    [
        ("a AND", 6),  # the end of the query
        ("AND a", 1),
        ("(a OR b", 8),
        ("a OR b)", 7),
        ("a b", 3),
        ("a & b", 3),
        ("  &", 3),
        ("()", 2),
        ("a AND OR b", 7),
        ("documents.read AND (documents.write OR )", 40),
        ("é", 1),
        ("a" * 281, 1),  # a name longer than 280 characters
        ("b AND " + "a" * 281, 7),
        ("(" * 33 + "a" + ")" * 33, 33),  # nested deeper than 32
        ("a OR " * 200 + "a", 1001),  # longer than 1000 characters
    ],
)
async def test_invalid_argument_malformed_query(admin: Caller, query: str, position: int) -> None:
    api = await admin.make_api()
    _, secret = await admin.make_key(api.id, ["a"])

    with pytest.raises(grpc.aio.AioRpcError) as e:
        await admin.verify(secret, query)

    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    violations = field_violations(e.value)
    assert list(violations) == ["permissions"]
    assert f"at character {position}" in violations["permissions"]


async def test_invalid_argument_is_checked_before_the_key_is_looked_up(admin: Caller) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await admin.verify("no_such_key_0123456789", "a AND")

    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
