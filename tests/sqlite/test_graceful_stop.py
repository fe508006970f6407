"""SIGTERM to `python -m keyscope_server serve --lame-duck S` under load.

The promise: health turns NOT_SERVING at once; for S seconds (the lame duck) the server goes on serving, so
that the calls already sent are served while callers move away; then new calls are refused with UNAVAILABLE
and change nothing, while the calls in flight get up to --grace seconds to finish; the process exits 0.

Writes are held in flight across the signal with no help from the server: another connection holds SQLite's
write lock, so they wait on the store's busy timeout (5 s) until the test lets go, once new calls are refused.
Reads never wait for that lock (WAL), so VerifyKey calls cannot be held the same way: they run as a load beside
the writes, from before the signal until they are refused, each with a request id of its own, and the server's
access log (a line per call it began) tells the calls it began from those it never did. Each SetPermissions
call of the test has a key of its own, so the file tells whether it changed anything.
"""

from __future__ import annotations

import asyncio
import re
import signal
import sqlite3
import time
from collections import Counter
from collections.abc import Awaitable
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from keyscope.v1 import apis_pb2, apis_pb2_grpc, keys_pb2, keys_pb2_grpc, permissions_pb2
from keyscope_server.cli import EXAMPLE_ROOT_KEY
from tests.polling import until
from tests.processes import create_root_key, free_port, start_serve, stop

pytestmark = pytest.mark.asyncio

Serving = health_pb2.HealthCheckResponse
Code = keys_pb2.VerifyKeyResponse.Code
OK, UNAVAILABLE = grpc.StatusCode.OK, grpc.StatusCode.UNAVAILABLE
Metadata = tuple[tuple[str, str], ...]

LAME_DUCK_SECONDS = 0.5  # explicit: the tests do not lean on the default
# Far longer than the test holds anything: the grace period running out must not be what ends a call here.
GRACE_SECONDS = 20
DEADLINE_SECONDS = 30
VERIFIERS = 15
HELD_WRITES = 15
PROBE_INTERVAL_SECONDS = 0.05
LAME_WRITES = 20  # at most, one beside each probe: more than a lame duck of 0.5 s has probes
LATE_WRITES = 2  # one on the connection in use, one on a new connection
UNCHANGED = ["documents.read"]  # what every key holds until a SetPermissions call changes it
ACCESS_LOG = re.compile(r" keyscope\.rpc \[(\S+)\] /\S+ ([A-Z_]+) ")


@dataclass
class Phase:
    signalled: bool = False  # SIGTERM sent
    refused: bool = False  # a call sent after NOT_SERVING was seen got UNAVAILABLE: the lame duck is over


@dataclass
class VerifyCall:
    request_id: str
    started_after_signal: bool
    started_after_refused: bool
    code: grpc.StatusCode | None = None  # None while in flight
    ended_after_signal: bool = False


@dataclass
class Verifier:
    index: int
    secret: str
    calls: list[VerifyCall] = field(default_factory=list)


@dataclass
class Observed:
    """What one SIGTERM under load looked like, from the client, the log and the file."""

    status_after_signal: int
    not_serving_after: float  # seconds from SIGTERM until the health watch told NOT_SERVING
    # Request id -> code: VerifyKey calls, one at a time from NOT_SERVING on until one was refused.
    probes: dict[str, grpc.StatusCode]
    lame_writes: dict[str, grpc.StatusCode]  # request id -> code: SetPermissions sent beside the probes
    late_calls: dict[str, grpc.StatusCode]  # request id -> code: sent once a probe had been refused
    held_done_during_stop: int  # held writes answered before the lock was let go
    held_answers: dict[str, list[str] | str]  # request id -> the names answered, or the error code
    wanted: dict[str, list[str]]  # request id -> the names each SetPermissions call asked for
    in_file: dict[str, list[str]]  # request id -> the names its key holds in the file at the end
    calls: list[VerifyCall]
    exit_code: int
    log: str

    def handled(self) -> dict[str, str]:
        """Request id -> the outcome the server logged, for every call it answered (one refused while the server
        stops is logged UNAVAILABLE: answered, never run)."""
        return dict(ACCESS_LOG.findall(self.log))

    def sent_in_lame_duck(self) -> dict[str, grpc.StatusCode | None]:
        """Request id -> code of every call sent from SIGTERM until a refusal was seen: those of the lame duck,
        and the probe that found it over."""
        verifies = {c.request_id: c.code for c in self.calls if c.started_after_signal and not c.started_after_refused}
        return verifies | self.probes | self.lame_writes


async def verify_until_refused(
    keys: keys_pb2_grpc.KeyServiceStub, md: Metadata, verifier: Verifier, phase: Phase
) -> None:
    while True:
        call = VerifyCall(f"verify-{verifier.index}-{len(verifier.calls)}", phase.signalled, phase.refused)
        verifier.calls.append(call)
        request = keys_pb2.VerifyKeyRequest(key=verifier.secret, permissions="documents.read")
        try:
            answer = await keys.VerifyKey(
                request, metadata=(*md, ("x-request-id", call.request_id)), timeout=DEADLINE_SECONDS
            )
        except grpc.aio.AioRpcError as e:
            call.code, call.ended_after_signal = e.code(), phase.signalled
            return
        call.code, call.ended_after_signal = OK, phase.signalled
        assert answer.code == Code.CODE_VALID, answer


async def code_of(call: Awaitable[object]) -> grpc.StatusCode:
    try:
        await call
    except grpc.aio.AioRpcError as e:
        return e.code()
    return OK


class Writes:
    """SetPermissions calls, each on a key of its own, so that the file tells what each one changed."""

    def __init__(self, md: Metadata, key_ids: list[str]) -> None:
        self._md, self._free = md, iter(key_ids)
        self.key_ids: dict[str, str] = {}  # request id -> key id
        self.wanted: dict[str, list[str]] = {}  # request id -> names

    def send(self, channel: grpc.aio.Channel, request_id: str, names: list[str]) -> grpc.aio.UnaryUnaryCall:
        key_id = self.key_ids[request_id] = next(self._free)
        self.wanted[request_id] = names
        return keys_pb2_grpc.KeyServiceStub(channel).SetPermissions(
            keys_pb2.SetPermissionsRequest(key_id=key_id, permissions=names),
            metadata=(*self._md, ("x-request-id", request_id)),
            timeout=DEADLINE_SECONDS,
        )

    def in_file(self, db: Path) -> dict[str, list[str]]:
        check = sqlite3.connect(db)
        try:
            return {
                request_id: [
                    name
                    for (name,) in check.execute(
                        "SELECT p.name FROM key_permissions kp JOIN permissions p ON p.id = kp.permission_id"
                        " WHERE kp.key_id = ? ORDER BY p.name",
                        (key_id,),
                    )
                ]
                for request_id, key_id in self.key_ids.items()
            }
        finally:
            check.close()


async def probe_until_refused(
    channel: grpc.aio.Channel, md: Metadata, secret: str, writes: Writes
) -> tuple[dict[str, grpc.StatusCode], dict[str, grpc.aio.Call]]:
    """VerifyKey, one at a time, until one is refused; beside each, a SetPermissions left in flight (while the
    lock is held, one the server takes waits for it)."""
    keys = keys_pb2_grpc.KeyServiceStub(channel)
    probes: dict[str, grpc.StatusCode] = {}  # request id -> code
    lame_writes: dict[str, grpc.aio.Call] = {}

    async def refused() -> bool:
        if len(lame_writes) < LAME_WRITES:
            n = len(lame_writes)
            lame_writes[f"lame-{n}"] = writes.send(channel, f"lame-{n}", [f"lame.{n}"])
        request_id = f"probe-{len(probes)}"
        request = keys_pb2.VerifyKeyRequest(key=secret, permissions="documents.read")
        probe_md = (*md, ("x-request-id", request_id))
        probes[request_id] = await code_of(keys.VerifyKey(request, metadata=probe_md, timeout=DEADLINE_SECONDS))
        return probes[request_id] == UNAVAILABLE

    await until(
        refused, lambda: f"a call refused: {probes}", LAME_DUCK_SECONDS + DEADLINE_SECONDS, PROBE_INTERVAL_SECONDS
    )
    return probes, lame_writes


async def call_late(
    channel: grpc.aio.Channel, port: int, md: Metadata, secret: str, writes: Writes
) -> dict[str, grpc.StatusCode]:
    """Health/Check, VerifyKey and SetPermissions, on the connection in use and on a new one."""
    late: dict[str, grpc.StatusCode] = {}
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as fresh:
        for name, ch in (("same", channel), ("new", fresh)):
            check_id, verify_id, write_id = (f"late-{method}-{name}" for method in ("check", "verify", "write"))
            late[check_id] = await code_of(
                health_pb2_grpc.HealthStub(ch).Check(
                    health_pb2.HealthCheckRequest(), metadata=(("x-request-id", check_id),)
                )
            )
            late[verify_id] = await code_of(
                keys_pb2_grpc.KeyServiceStub(ch).VerifyKey(
                    keys_pb2.VerifyKeyRequest(key=secret), metadata=(*md, ("x-request-id", verify_id))
                )
            )
            late[write_id] = await code_of(writes.send(ch, write_id, ["too.late"]))
    return late


async def sigterm_under_load(tmp_path: Path) -> Observed:
    db, log = tmp_path / "keyscope.db", tmp_path / "serve.log"
    md = (("authorization", f"Bearer {create_root_key(tmp_path, db, *EXAMPLE_ROOT_KEY)}"),)
    port = free_port()
    flags = ("--grace", str(GRACE_SECONDS), "--lame-duck", str(LAME_DUCK_SECONDS))
    process = start_serve(tmp_path, db, port, *flags, log=log)
    phase = Phase()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            keys, health = keys_pb2_grpc.KeyServiceStub(channel), health_pb2_grpc.HealthStub(channel)
            api = await apis_pb2_grpc.ApiServiceStub(channel).CreateApi(
                apis_pb2.CreateApiRequest(name="stop", scopes=[permissions_pb2.Scope(value="documents.read")]),
                metadata=md,
            )
            created = await asyncio.gather(
                *(
                    keys.CreateKey(keys_pb2.CreateKeyRequest(api_id=api.api.id, permissions=UNCHANGED), metadata=md)
                    for _ in range(VERIFIERS + HELD_WRITES + LAME_WRITES + LATE_WRITES)
                )
            )
            writes = Writes(md, [c.key.id for c in created[VERIFIERS:]])
            watch = health.Watch(health_pb2.HealthCheckRequest())
            assert (await watch.read()).status == Serving.SERVING

            verifiers = [Verifier(i, c.secret) for i, c in enumerate(created[:VERIFIERS])]
            tasks = [asyncio.create_task(verify_until_refused(keys, md, v, phase)) for v in verifiers]
            await until(lambda: all(v.calls and v.calls[0].code == OK for v in verifiers))

            other = sqlite3.connect(db, isolation_level=None)
            try:
                other.execute("BEGIN IMMEDIATE")  # from here the store's writer waits
                held = {
                    f"held-{i}": writes.send(channel, f"held-{i}", [f"held.{i}.read", f"held.{i}.write"])
                    for i in range(HELD_WRITES)
                }
                # A call of the same method sent after them on the same connection, refused at once: once it is
                # answered, the writes have reached the server, and (it takes the calls of one method in the
                # order they came) been handed to handlers, where they wait for the lock.
                bad_write = keys_pb2.SetPermissionsRequest(key_id="key-1")
                assert await code_of(keys.SetPermissions(bad_write, metadata=md)) == grpc.StatusCode.INVALID_ARGUMENT
                assert not any(call.done() for call in held.values())

                process.send_signal(signal.SIGTERM)
                signalled_at, phase.signalled = time.monotonic(), True

                status_after_signal = (await asyncio.wait_for(watch.read(), DEADLINE_SECONDS)).status
                not_serving_after = time.monotonic() - signalled_at
                watch.cancel()  # a watch is a call in flight too: the stop would wait for it

                probes, lame_calls = await probe_until_refused(channel, md, verifiers[0].secret, writes)
                phase.refused = True
                late_calls = await call_late(channel, port, md, verifiers[0].secret, writes)
                held_done_during_stop = sum(call.done() for call in held.values())
            finally:
                other.execute("ROLLBACK")
                other.close()

            held_answers: dict[str, list[str] | str] = {}
            for request_id, call in held.items():
                try:
                    held_answers[request_id] = sorted(p.name for p in (await call).permissions)
                except grpc.aio.AioRpcError as e:
                    held_answers[request_id] = e.code().name
            lame_writes = {request_id: await code_of(call) for request_id, call in lame_calls.items()}
            await asyncio.wait_for(asyncio.gather(*tasks), DEADLINE_SECONDS)
        exit_code = process.wait(DEADLINE_SECONDS)
    finally:
        if process.poll() is None:
            stop(process, signal.SIGKILL)

    return Observed(
        status_after_signal=status_after_signal,
        not_serving_after=not_serving_after,
        probes=probes,
        lame_writes=lame_writes,
        late_calls=late_calls,
        held_done_during_stop=held_done_during_stop,
        held_answers=held_answers,
        wanted=writes.wanted,
        in_file=writes.in_file(db),
        calls=[c for v in verifiers for c in v.calls],
        exit_code=exit_code,
        log=log.read_text(),
    )


async def test_ok_sigterm_lets_calls_taken_finish_and_refuses_new_ones(tmp_path: Path) -> None:
    seen = await sigterm_under_load(tmp_path)
    tail, handled = seen.log[-3000:], seen.handled()

    # NOT_SERVING at once, and calls still served after it: callers can move away before anything is refused.
    assert seen.status_after_signal == Serving.NOT_SERVING
    assert seen.not_serving_after < LAME_DUCK_SECONDS
    assert next(iter(seen.probes.values())) == OK, seen.probes
    # Of the calls sent during the lame duck, those the server began ended OK on both sides and took effect;
    # the others were never begun and changed nothing. (How the others end: see the last test below.)
    during = seen.sent_in_lame_duck()
    assert {r: handled.get(r) for r, code in during.items() if code == OK} == {
        r: "OK" for r, code in during.items() if code == OK
    }
    # (A call refused by the interceptor while the server stops is logged UNAVAILABLE: answered, never run.)
    assert [r for r, code in during.items() if code != OK and handled.get(r, "UNAVAILABLE") != "UNAVAILABLE"] == []
    assert {r: seen.in_file[r] for r in seen.lame_writes} == {
        r: seen.wanted[r] if code == OK else UNCHANGED for r, code in seen.lame_writes.items()
    }
    # Once a call was refused, every new one is: health included, on the old connection and on a new one;
    # none was begun, none changed anything.
    assert seen.late_calls == dict.fromkeys(seen.late_calls, UNAVAILABLE) and len(seen.late_calls) == 6
    assert [r for r in seen.late_calls if handled.get(r, "UNAVAILABLE") != "UNAVAILABLE"] == []
    late_writes = [r for r in seen.late_calls if r.startswith("late-write-")]
    assert {r: seen.in_file[r] for r in late_writes} == dict.fromkeys(late_writes, UNCHANGED) and late_writes
    assert [c.request_id for c in seen.calls if c.started_after_refused and c.code != UNAVAILABLE] == []

    # The writes taken before the signal were still waiting once new calls were refused, and were carried out.
    held = list(seen.held_answers)
    assert seen.held_done_during_stop == 0
    assert seen.held_answers == {r: seen.wanted[r] for r in held}, tail
    assert {r: seen.in_file[r] for r in held} == {r: seen.wanted[r] for r in held}
    assert {r: handled.get(r) for r in held} == dict.fromkeys(held, "OK")

    assert seen.exit_code == 0, tail
    assert "Traceback" not in seen.log and " ERROR " not in seen.log, tail
    assert "stopping: health NOT_SERVING" in seen.log and seen.log.rstrip().endswith("stopped"), tail
    print(
        f"NOT_SERVING after {seen.not_serving_after * 1000:.1f} ms; sent after SIGTERM, before a refusal was seen: "
        f"{dict(Counter(code.name for code in during.values() if code))}"
    )


async def test_ok_sigterm_cancels_no_call_sent_before_it(tmp_path: Path) -> None:
    # Calls gRPC had received but not yet handed to a handler when the stop began used to end CANCELLED,
    # never run: the lame duck serves them first. The held writes were taken before the signal; the verifies
    # on their way when it came are the calls in question.
    seen = await sigterm_under_load(tmp_path)
    handled = seen.handled()
    sent_before: dict[str, object] = {c.request_id: c.code for c in seen.calls if not c.started_after_signal}
    sent_before |= {r: OK if isinstance(a, list) else a for r, a in seen.held_answers.items()}

    assert sent_before == dict.fromkeys(sent_before, OK)
    assert {r: handled.get(r) for r in sent_before} == dict.fromkeys(sent_before, "OK")
    assert {r: seen.in_file[r] for r in seen.held_answers} == {r: seen.wanted[r] for r in seen.held_answers}
    spanning = [c for c in seen.calls if not c.started_after_signal and c.ended_after_signal]
    print(f"{len(sent_before)} calls sent before SIGTERM, all OK; {len(spanning)} verifies answered after it")


# Calls sent during the lame duck: served or refused with UNAVAILABLE (which callers retry), never CANCELLED.
# Serving on alone would not do it: the calls on their way when the stop begins (received by gRPC, not yet
# handed to a handler) would end CANCELLED, never run (12 to 14 of 15 verifiers' last calls, in every run).
# Between the lame duck and the stop, the interceptor answers every new call UNAVAILABLE for a moment.
async def test_ok_sigterm_cancels_no_call_sent_during_lame_duck(tmp_path: Path) -> None:
    seen = await sigterm_under_load(tmp_path)
    during = seen.sent_in_lame_duck()
    assert [r for r, code in during.items() if code not in (OK, UNAVAILABLE)] == []
