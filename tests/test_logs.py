"""What the server logs, by outcome of the call: JSON lines (`--log-format json`) with the access log's fields, the
text format's access line, and the warnings of failed authentication, rate-limited.

A real server on a real store, called through the stubs; the log is written by logs.py's own handler onto a StringIO,
and every line of it must parse as one JSON object. Logging is the same on every engine: SQLite alone here.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
import signal
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest

from keyscope.v1 import apis_pb2, keys_pb2
from keyscope_server.logs import auth_failure_warnings, log_handler
from tests.client import Caller
from tests.polling import until
from tests.processes import free_port, server_env, start_serve, stop

CREATE_API = "/keyscope.v1.ApiService/CreateApi"
GET_API = "/keyscope.v1.ApiService/GetApi"
VERIFY_KEY = "/keyscope.v1.KeyService/VerifyKey"
ACCESS_FIELDS = {"method", "code", "duration_ms", "caller", "peer", "outcome"}
PEER = re.compile(r"ipv4:127\.0\.0\.1:\d+")
WARNING_LIMIT = 3


@pytest.fixture
def engine() -> str:
    return "sqlite"


class Log:
    """The lines logs.py's handler wrote, each parsed as JSON (a line that is not one object fails the test)."""

    def __init__(self, stream: io.StringIO) -> None:
        self.stream = stream

    def records(self) -> list[dict[str, Any]]:
        records = [json.loads(line) for line in self.stream.getvalue().splitlines()]
        assert all(isinstance(r, dict) for r in records), records
        return records

    def access(self, request_id: str) -> list[dict[str, Any]]:
        return [r for r in self.records() if r["logger"] == "keyscope.rpc" and r["request_id"] == request_id]

    async def access_line(self, request_id: str) -> dict[str, Any]:
        """The one access line of the call sent with `request_id`, once it is written."""
        await until(lambda: self.access(request_id), f"an access line of {request_id}: {self.stream.getvalue()}")
        [line] = self.access(request_id)
        return line

    def warnings(self) -> list[dict[str, Any]]:
        return [r for r in self.records() if r["logger"] == "keyscope.auth"]


def _installed(log_format: str) -> Iterator[io.StringIO]:
    stream = io.StringIO()
    handler = log_handler(log_format, stream)
    root = logging.getLogger()
    level, limit, interval = root.level, auth_failure_warnings.limit, auth_failure_warnings.interval
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    auth_failure_warnings.configure(limit=WARNING_LIMIT, interval=3600.0)  # afresh: other tests failed before
    try:
        yield stream
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
        auth_failure_warnings.configure(limit, interval)


@pytest.fixture
def json_log() -> Iterator[Log]:
    for stream in _installed("json"):
        yield Log(stream)


@pytest.fixture
def text_log() -> Iterator[io.StringIO]:
    yield from _installed("text")


def _with_id(caller: Caller, request_id: str) -> tuple[tuple[str, str], ...]:
    return (*caller.md, ("x-request-id", request_id))


def _bad_root_key(caller: Caller) -> str:
    return caller.root_key[:-4] + ("XXXX" if not caller.root_key.endswith("XXXX") else "YYYY")


# -- ok ----------------------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_ok_call_is_one_json_line_with_every_field(admin: Caller, json_log: Log) -> None:
    before = datetime.now(UTC)
    await admin.apis.CreateApi(apis_pb2.CreateApiRequest(name="logged"), metadata=_with_id(admin, "trace-ok"))

    line = await json_log.access_line("trace-ok")
    assert (line["level"], line["logger"], line["method"], line["code"]) == ("INFO", "keyscope.rpc", CREATE_API, "OK")
    assert line["caller"] == admin.root_key_id
    assert PEER.fullmatch(line["peer"]), line
    assert line["outcome"] is None  # not a VerifyKey
    assert isinstance(line["duration_ms"], float) and 0 < line["duration_ms"] < 60_000
    assert (
        line["message"] == f"{CREATE_API} OK {line['duration_ms']:.1f}ms caller={admin.root_key_id} peer={line['peer']}"
    )
    # RFC 3339, in UTC, and now.
    time = datetime.fromisoformat(line["time"])
    assert time.utcoffset() == timedelta(0)
    assert before - timedelta(seconds=1) <= time <= datetime.now(UTC)
    assert ACCESS_FIELDS <= line.keys()


@pytest.mark.asyncio
async def test_ok_verify_key_carries_its_outcome(admin: Caller, json_log: Log) -> None:
    api = await admin.make_api()
    _, secret = await admin.make_key(api.id, ["documents.read"])

    async def verify(key: str, query: str, request_id: str) -> None:
        request = keys_pb2.VerifyKeyRequest(key=key, permissions=query)
        await admin.keys.VerifyKey(request, metadata=_with_id(admin, request_id))

    await verify(secret, "documents.read", "verify-valid")
    await verify(secret, "documents.write", "verify-insufficient")
    await verify(secret[:-4] + "XXXX" if not secret.endswith("XXXX") else secret[:-4] + "YYYY", "", "verify-unknown")
    await admin.apis.GetApi(apis_pb2.GetApiRequest(api_id=api.id), metadata=_with_id(admin, "after-verify"))

    outcomes = [(await json_log.access_line(i))["outcome"] for i in ("verify-valid", "verify-insufficient")]
    assert outcomes == ["VALID", "INSUFFICIENT_PERMISSIONS"]
    unknown = await json_log.access_line("verify-unknown")
    assert (unknown["method"], unknown["code"], unknown["outcome"]) == (VERIFY_KEY, "OK", "NOT_FOUND")
    # A call after a VerifyKey on the same channel has no outcome of its own: none is carried over.
    assert (await json_log.access_line("after-verify"))["outcome"] is None
    assert secret not in json_log.stream.getvalue()


@pytest.mark.asyncio
async def test_ok_exception_is_a_field_of_one_line(json_log: Log) -> None:
    try:
        raise ValueError("first line\nsecond line")
    except ValueError:
        logging.getLogger("keyscope.test").exception("failed:\nhere")

    [record] = json_log.records()  # splitlines: one line, whatever newlines message and traceback hold
    assert (record["level"], record["message"]) == ("ERROR", "failed:\nhere")
    assert record["exception"].startswith("Traceback (most recent call last):\n")
    assert record["exception"].endswith("ValueError: first line\nsecond line")
    assert record["request_id"] is None  # outside any call


@pytest.mark.asyncio
async def test_ok_text_format_is_todays_line_with_the_peer(admin: Caller, text_log: io.StringIO) -> None:
    api = await admin.make_api()
    await admin.apis.GetApi(apis_pb2.GetApiRequest(api_id=api.id), metadata=_with_id(admin, "trace-text"))

    def line() -> str | None:
        return next((li for li in text_log.getvalue().splitlines() if "[trace-text]" in li), None)

    text = await until(line, lambda: text_log.getvalue())
    pattern = (
        r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO \d+ keyscope\.rpc \[trace-text\] "
        rf"{re.escape(GET_API)} OK \d+\.\dms caller={admin.root_key_id} peer=ipv4:127\.0\.0\.1:\d+"
    )
    assert re.fullmatch(pattern, text), text


# -- invalid argument ------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_invalid_argument_call_logs_its_code(admin: Caller, json_log: Log) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await admin.apis.GetApi(apis_pb2.GetApiRequest(api_id="not an id"), metadata=_with_id(admin, "trace-bad"))
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT

    line = await json_log.access_line("trace-bad")
    assert (line["level"], line["method"], line["code"]) == ("INFO", GET_API, "INVALID_ARGUMENT")
    assert line["caller"] == admin.root_key_id
    assert PEER.fullmatch(line["peer"]), line
    assert json_log.warnings() == []  # only failed authentication warns


# -- unauthenticated ---------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_unauthenticated_warns_with_peer_and_reason_never_the_secret(admin: Caller, json_log: Log) -> None:
    impostor = _bad_root_key(admin)
    for request_id, metadata in [
        ("trace-unknown", (("authorization", f"Bearer {impostor}"), ("x-request-id", "trace-unknown"))),
        ("trace-missing", (("x-request-id", "trace-missing"),)),
    ]:
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await admin.apis.GetApi(apis_pb2.GetApiRequest(api_id="api_1"), metadata=metadata)
        assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
        line = await json_log.access_line(request_id)
        assert (line["code"], line["caller"]) == ("UNAUTHENTICATED", None)

    warnings = json_log.warnings()
    assert [(w["level"], w["request_id"]) for w in warnings] == [
        ("WARNING", "trace-unknown"),
        ("WARNING", "trace-missing"),
    ]
    assert [w["reason"] for w in warnings] == [
        "unknown root key",
        "missing authorization metadata: send 'authorization: Bearer <root key>'",
    ]
    assert all(PEER.fullmatch(w["peer"]) for w in warnings), warnings
    assert warnings[0]["message"] == f"authentication failed: unknown root key (peer {warnings[0]['peer']})"
    logged = json_log.stream.getvalue()
    assert impostor not in logged and impostor.split("_", 1)[1] not in logged
    assert admin.root_key not in logged


@pytest.mark.asyncio
async def test_unauthenticated_flood_warns_up_to_the_limit_then_counts(admin: Caller, json_log: Log) -> None:
    impostor = _bad_root_key(admin)
    flood = 40
    auth_failure_warnings.configure(limit=WARNING_LIMIT, interval=2.0)

    async def bad_call(n: int) -> grpc.StatusCode:
        metadata = (("authorization", f"Bearer {impostor}"), ("x-request-id", f"flood-{n}"))
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await admin.apis.GetApi(apis_pb2.GetApiRequest(api_id="api_1"), metadata=metadata)
        return e.value.code()

    codes = await asyncio.gather(*(bad_call(n) for n in range(flood)))
    assert set(codes) == {grpc.StatusCode.UNAUTHENTICATED}
    # Every call has its access line; the warnings stop at the limit.
    await until(lambda: all(json_log.access(f"flood-{n}") for n in range(flood)), "every access line")
    assert len([w for w in json_log.warnings() if "reason" in w]) == WARNING_LIMIT
    # When the interval ends, with no further call, one line says how many were held back.
    summaries = await until(lambda: [w for w in json_log.warnings() if "suppressed" in w], "the suppression line")
    assert [(s["level"], s["suppressed"]) for s in summaries] == [("WARNING", flood - WARNING_LIMIT)]
    assert summaries[0]["message"] == (
        f"{flood - WARNING_LIMIT} more authentication failures not logged: at most {WARNING_LIMIT} are logged in 2s"
    )
    # The next failure opens a new interval, and is logged.
    assert await bad_call(flood) == grpc.StatusCode.UNAUTHENTICATED
    await until(lambda: any(w["request_id"] == f"flood-{flood}" for w in json_log.warnings()), "a new warning")
    assert len(json_log.warnings()) == WARNING_LIMIT + 2
    assert impostor.split("_", 1)[1] not in json_log.stream.getvalue()


# -- the command --------------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["flag", "env", "workers"])
def test_ok_serve_log_format_json_prints_json_lines(tmp_path: Path, how: str) -> None:
    port = free_port()
    flags = {"flag": ("--log-format", "json"), "env": (), "workers": ("--log-format", "json", "--workers", "2")}[how]
    env = server_env(KEYSCOPE_LOG_FORMAT="json") if how == "env" else None
    process = start_serve(tmp_path, tmp_path / "keyscope.db", port, *flags, env=env)  # its health check is a call
    code, output = stop(process, signal.SIGINT)

    assert code == 0, output
    records = [json.loads(line) for line in output.splitlines()]  # each line, the workers' too
    serving = [r for r in records if r["message"].startswith(f"keyscope serving on 127.0.0.1:{port}")]
    assert len({r["pid"] for r in serving}) == (2 if how == "workers" else 1), serving
    assert sum(r["message"] == "stopped" for r in records) == len(serving)
    [check] = [r for r in records if r.get("method") == "/grpc.health.v1.Health/Check"]
    assert (check["code"], check["caller"], check["outcome"]) == ("OK", None, None)
    assert PEER.fullmatch(check["peer"]), check
