"""`python -m keyscope_server migrate --from SOURCE --to TARGET`: a whole store copied into an empty database, and
proved.

Each test runs the real command in a subprocess, from a SQLite file to a PostgreSQL database of the run's cluster
(a database without even the schema: opening the target creates it), whichever engine the rest of the suite is
parametrized with.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import re
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TypeVar

import grpc
import pytest
import pytest_asyncio

from keyscope.v1 import keys_pb2
from keyscope_server.access import Principal
from keyscope_server.cli import EXAMPLE_ROOT_KEY
from keyscope_server.credentials import ROOT_KEY_PREFIX, hash_secret, new_secret, secret_start
from keyscope_server.factory import ServerConfig, start_server
from keyscope_server.store import Store, open_store
from keyscope_server.store.audit_replay import replay, store_state
from keyscope_server.store.copy import CopyFailed, prove_copy
from keyscope_server.store.models import KeyChanges, NewKey, ScopeSpec
from keyscope_server.store.postgresql.snapshot import COPY_CHUNK
from keyscope_server.store.snapshot import StoreSnapshot
from tests.client import Caller
from tests.postgresql_cluster import PASSWORD_ROLE, Cluster
from tests.processes import free_port, run

pytestmark = pytest.mark.asyncio

T = TypeVar("T")
Code = keys_pb2.VerifyKeyResponse.Code

ADMIN = Principal("root_test", EXAMPLE_ROOT_KEY)
PASSWORD = "pw-Never-Shown-4711"  # a test's, to search output for
NAMES = [f"{area}.{verb}" for area in ("docs", "users", "billing") for verb in ("read", "write", "admin")]
# Every table of a store, in the order the import writes them, as its progress names them.
TABLES = [
    "apis",
    "permissions",
    "keys",
    "roles",
    "root_keys",
    "key_permissions",
    "key_roles",
    "role_permissions",
    "root_key_permissions",
    "changes",
    "audit_events",
]
PROGRESS = re.compile(r"^migrate: (\w+) (\d+)/(\d+)$")
_numbers = itertools.count()

NewPostgresDatabase = Callable[..., str]


@pytest.fixture
def new_postgres_database(postgres_cluster: Cluster) -> Iterator[NewPostgresDatabase]:
    """`new_postgres_database(owner=None)`: the URL of a new database on the run's cluster, with no schema at all,
    dropped after the test."""
    made: list[str] = []

    def new(owner: str | None = None) -> str:
        made.append(f"migrate_{next(_numbers)}")
        postgres_cluster.psql(f"CREATE DATABASE {made[-1]}" + (f" OWNER {owner}" if owner else ""))
        return postgres_cluster.url(made[-1])

    yield new
    for database in made:
        postgres_cluster.psql(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")


@pytest_asyncio.fixture
async def source_db(tmp_path: Path) -> Path:
    """A SQLite store that holds a little of everything."""
    path = tmp_path / "source.db"
    store = await open_store(str(path))
    try:
        api = (await store.create_api(ADMIN, "documents", [ScopeSpec("docs.read", "Read")])).value
        await store.create_role(ADMIN, api.id, "reader", "reads", ["docs.read"])
        secret = new_secret("sk")
        key = NewKey(api.id, "k", hash_secret(secret), secret_start(secret, "sk"), True, None, ("x",), ("reader",))
        await store.create_key(ADMIN, key)
        await store.create_root_key("ops", hash_secret(new_secret(ROOT_KEY_PREFIX)), ["api.*.read_key"])
    finally:
        await store.close()
    return path


async def _snapshot(db: str) -> StoreSnapshot:
    store = await open_store(db)
    try:
        return await store.export_snapshot()
    finally:
        await store.close()


def _migrate(cwd: Path, source: str, target: str, *flags: str) -> tuple[int, str, str]:
    result = run(cwd, "migrate", "--from", source, "--to", target, *flags)
    return result.returncode, result.stdout, result.stderr


# -- ok ------------------------------------------------------------------------------------------


async def _chunked(calls: Sequence[Awaitable[T]], size: int = 250) -> list[T]:
    """Await the calls `size` at a time: concurrent writes share transactions (group commit)."""
    results: list[T] = []
    for start in range(0, len(calls), size):
        results += await asyncio.gather(*calls[start : start + size])
    return results


@dataclass(frozen=True)
class Filled:
    """What a test needs to know of a filled store: secrets live only here."""

    untouched: tuple[str, str]  # (id, secret) of a key left as it was made
    deleted_secret: str
    disabled_secret: str
    root_secret: str  # a root key that may verify keys


async def _fill(store: Store, keys: int) -> Filled:
    """3 APIs, 12 roles, `keys` keys, 4 root keys, and changes to many of them (permissions, roles, flags, expiries,
    deletions, a scope removed), all through the store's rules, so that the audit trail tells it all."""
    rng = random.Random(7)
    apis = [
        (await store.create_api(ADMIN, f"api {n}", [ScopeSpec(v, f"{v} of api {n}") for v in NAMES])).value.id
        for n in range(3)
    ]
    roles: dict[str, dict[str, str]] = {api_id: {} for api_id in apis}  # api id -> role name -> role id
    for api_id in apis:
        for name in (f"role{n}" for n in range(4)):
            role = await store.create_role(ADMIN, api_id, name, f"{name} does", [*rng.sample(NAMES, 3), f"x.{name}"])
            roles[api_id][name] = role.value.id

    async def create(n: int) -> tuple[str, str, str]:
        api_id, secret = apis[n % len(apis)], new_secret("sk")
        permissions = (*rng.sample(NAMES, 2), *([f"custom.{n % 40}"] if n % 5 == 0 else []))
        role = (rng.choice(list(roles[api_id])),) if n % 3 == 0 else ()
        expires = int(time.time() * 1000) + 86_400_000 * (1 + n % 30) if n % 7 == 0 else None
        new = NewKey(
            api_id, f"key {n}", hash_secret(secret), secret_start(secret, "sk"), True, expires, permissions, role
        )
        return (await store.create_key(ADMIN, new)).value.id, api_id, secret

    made = await _chunked([create(n) for n in range(keys)])
    rng.shuffle(made)
    tenth = len(made) // 10
    granted, given_roles, disabled, expiring, deleted = (made[n * tenth : (n + 1) * tenth] for n in range(5))
    await _chunked([store.set_permissions(ADMIN, k, [*rng.sample(NAMES, 3), "late.grant"]) for k, _, _ in granted])
    await _chunked([store.set_roles(ADMIN, k, rng.sample(list(roles[a]), 2)) for k, a, _ in given_roles])
    await _chunked([store.update_key(ADMIN, k, KeyChanges(enabled=False)) for k, _, _ in disabled])
    soon = int(time.time() * 1000) + 3_600_000
    await _chunked([store.update_key(ADMIN, k, KeyChanges(name="renamed", expires_ms=soon)) for k, _, _ in expiring])
    await _chunked([store.delete_key(ADMIN, k) for k, _, _ in deleted])
    for names in roles.values():
        for role_id in list(names.values())[:2]:
            await store.set_role_permissions(ADMIN, role_id, rng.sample(NAMES, 4))
    # Removing a scope takes every grant of it along, which no event of the keys and roles says.
    await store.update_scopes(ADMIN, apis[0], [ScopeSpec(v, "kept") for v in NAMES if v != "docs.read"])
    root_secret = new_secret(ROOT_KEY_PREFIX)
    await store.create_root_key("verifier", hash_secret(root_secret), ["api.*.verify_key"])
    for n in range(3):
        root = await store.create_root_key(f"ops {n}", hash_secret(new_secret(ROOT_KEY_PREFIX)), ["api.*.read_key"])
        if n == 1:
            await store.set_root_key_enabled(root.id, False)
        if n == 2:
            await store.delete_root_key(root.id)
    untouched = made[-1]
    return Filled((untouched[0], untouched[2]), deleted[0][2], disabled[0][2], root_secret)


async def test_ok_a_sqlite_store_of_thousands_of_keys_moves_to_postgresql_and_proves_the_copy(
    tmp_path: Path, new_postgres_database: NewPostgresDatabase
) -> None:
    source_path, target = tmp_path / "source.db", new_postgres_database()
    source = await open_store(str(source_path))
    try:
        filled = await _fill(source, keys=3000)
        held = await source.export_snapshot()
        verified = await source.verify_key(ADMIN, hash_secret(filled.untouched[1]))
    finally:
        await source.close()

    started = time.monotonic()
    code, stdout, stderr = _migrate(tmp_path, str(source_path), target)
    took = time.monotonic() - started

    assert code == 0, stderr
    assert stdout == ""
    copied = await _snapshot(target)
    assert copied == held
    assert await _snapshot(str(source_path)) == held  # the source was only read
    assert replay(copied.audit_events) == store_state(copied)
    # Every table's progress, in the order the import writes them, ending at its row count; and a table larger
    # than one COPY is reported as it goes.
    progress = [m.groups() for m in map(PROGRESS.match, stderr.splitlines()) if m]
    assert list(dict.fromkeys(table for table, _, _ in progress)) == TABLES
    last = {table: (int(written), int(total)) for table, written, total in progress}
    assert last == {t: (len(getattr(held, t)), len(getattr(held, t))) for t in TABLES}
    large = [t for t in TABLES if len(getattr(held, t)) > COPY_CHUNK]
    assert large, "the store should hold a table larger than one COPY"
    for table in large:
        assert (table, str(COPY_CHUNK), str(len(getattr(held, table)))) in progress
    assert stderr.splitlines()[-1] == (
        f"migrate: copied 3 APIs, {len(held.keys)} keys, 12 roles, 3 root keys, {len(held.audit_events)} audit "
        f"events, at revision {held.revision}: snapshot equal, audit replay equal"
    )
    assert len(held.keys) == 2700 and held.revision == len(held.audit_events) > 4000

    # A server on the copy answers VerifyKey as the source did, for the root key that came along.
    target_store = await open_store(target)
    running = await start_server(target_store, ServerConfig(host="127.0.0.1", port=0))
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            [root] = [r for r in copied.root_keys if r.name == "verifier"]
            caller = Caller(channel, filled.root_secret, root.id)
            answer = await caller.verify(filled.untouched[1])
            assert answer.valid and answer.key_id == filled.untouched[0]
            assert verified is not None and tuple(answer.permissions) == verified.permissions
            assert (await caller.verify(filled.disabled_secret)).code == Code.CODE_DISABLED
            assert (await caller.verify(filled.deleted_secret)).code == Code.CODE_NOT_FOUND
    finally:
        await running.stop(None)
        await target_store.close()
    rows = sum(len(getattr(held, t)) for t in TABLES)
    print(f"migrate: {rows} rows ({len(held.keys)} keys, {len(held.audit_events)} events) in {took:.2f}s")


async def test_ok_a_password_in_the_urls_never_shows(
    tmp_path: Path, source_db: Path, postgres_cluster: Cluster, new_postgres_database: NewPostgresDatabase
) -> None:
    # The cluster trusts its superuser, so the password goes unused; what matters is that the URL holds one.
    database = new_postgres_database().rsplit("/", 1)[1]
    target = postgres_cluster.url(database, password=PASSWORD)

    code, stdout, stderr = _migrate(tmp_path, str(source_db), target, "--log-level", "debug")

    assert code == 0, stderr
    assert f"to {postgres_cluster.url(database)}" in stderr  # named, without its password
    assert PASSWORD not in stdout + stderr


# -- refused -------------------------------------------------------------------------------------


async def test_unavailable_a_target_that_holds_data_is_left_as_it_was(
    tmp_path: Path, source_db: Path, new_postgres_database: NewPostgresDatabase
) -> None:
    target = new_postgres_database()
    store = await open_store(target)
    try:
        await store.create_api(ADMIN, "already here", [ScopeSpec("docs.read", "")])
        before = await store.export_snapshot()
    finally:
        await store.close()

    code, stdout, stderr = _migrate(tmp_path, str(source_db), target)

    assert code == 1
    assert stderr.splitlines()[-1] == (
        "error: the target store already holds data: a snapshot is written only into an empty one"
    )
    assert not [line for line in stderr.splitlines() if PROGRESS.match(line)]
    assert await _snapshot(target) == before


@pytest.mark.parametrize(
    "source, target",
    [
        ("keyscope.db", "keyscope.db"),
        ("keyscope.db", "./sub/../keyscope.db"),
        (f"postgresql://a:{PASSWORD}@127.0.0.1:1/keyscope", f"postgres://b:{PASSWORD}@127.0.0.1:1/keyscope"),
    ],
    ids=["same-file", "same-file-spelled-otherwise", "same-postgresql-database"],
)
async def test_invalid_argument_from_and_to_the_same_database(tmp_path: Path, source: str, target: str) -> None:
    if not source.startswith("postgres"):
        store = await open_store(str(tmp_path / source))
        await store.create_api(ADMIN, "documents", [])
        await store.close()
        before = await _snapshot(str(tmp_path / source))

    code, stdout, stderr = _migrate(tmp_path, source, target)

    assert code == 2
    assert "--from and --to name the same database" in stderr
    assert PASSWORD not in stdout + stderr
    if not source.startswith("postgres"):
        assert await _snapshot(str(tmp_path / source)) == before


async def test_invalid_argument_a_missing_source_file_is_not_created(tmp_path: Path) -> None:
    code, _, stderr = _migrate(tmp_path, "missing.db", "target.db")

    assert code == 2
    assert "--from missing.db: no such file" in stderr
    assert not (tmp_path / "missing.db").exists() and not (tmp_path / "target.db").exists()


@pytest.fixture(params=["wrong-password", "nothing-listening"])
def unreachable_target(
    request: pytest.FixtureRequest, postgres_cluster: Cluster, postgres_password: str
) -> Iterator[str]:
    """A URL with PASSWORD for PASSWORD_ROLE (which must give a password over TCP, and whose password is another),
    of a database the role owns, that the command cannot use."""
    assert postgres_password != PASSWORD
    database = f"migrate_{next(_numbers)}"
    postgres_cluster.psql(f"CREATE DATABASE {database} OWNER {PASSWORD_ROLE}")
    target = postgres_cluster.url(database, user=PASSWORD_ROLE, password=PASSWORD)
    if request.param == "nothing-listening":
        target = target.replace(f":{postgres_cluster.port}/", f":{free_port()}/")
    yield target
    postgres_cluster.psql(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")


async def test_unavailable_an_unreachable_target_is_named_in_one_error_line_without_its_password(
    tmp_path: Path, source_db: Path, unreachable_target: str
) -> None:
    flags = ("--log-level", "debug", "--db-timeout", "2")
    code, stdout, stderr = _migrate(tmp_path, str(source_db), unreachable_target, *flags)

    assert code == 1
    assert stderr.splitlines()[-1].startswith(f"error: --to postgresql://{PASSWORD_ROLE}@127.0.0.1:")
    assert "Traceback" not in stderr
    assert PASSWORD not in stdout + stderr


async def test_failed_precondition_a_source_whose_audit_trail_does_not_replay_is_not_copied(
    tmp_path: Path, source_db: Path, new_postgres_database: NewPostgresDatabase
) -> None:
    # A store written from a snapshot without its events (as the benchmark seeds one): nothing proves a copy.
    seeded = tmp_path / "seeded.db"
    store = await open_store(str(seeded))
    try:
        await store.import_snapshot(replace(await _snapshot(str(source_db)), audit_events=()))
    finally:
        await store.close()
    target = new_postgres_database()

    code, _, stderr = _migrate(tmp_path, str(seeded), target)

    assert code == 1
    assert stderr.splitlines()[-1].startswith("error: the source's audit trail does not replay to what the source")
    assert stderr.splitlines()[-1].endswith("Nothing was written")
    untouched = await _snapshot(target)
    assert untouched.revision == 0 and not any(getattr(untouched, table) for table in TABLES)


# -- the proof, on its own -----------------------------------------------------------------------


async def test_failed_precondition_a_copy_that_lacks_a_row_is_named_and_refused(source_db: Path) -> None:
    held = await _snapshot(str(source_db))
    [key] = held.keys

    with pytest.raises(CopyFailed) as lacking:
        prove_copy(held, replace(held, keys=()))
    with pytest.raises(CopyFailed) as behind:
        prove_copy(held, replace(held, revision=held.revision - 1))

    assert str(lacking.value).startswith(
        f"the copy differs from the source: keys: 1 rows in the source, 0 in the copy, the first that differs is "
        f"row 0 ({key.id}). The target now holds that copy"
    )
    assert str(behind.value).startswith(
        f"the copy differs from the source: the revision is {held.revision} in the source, {held.revision - 1} in"
    )
    prove_copy(held, held)
