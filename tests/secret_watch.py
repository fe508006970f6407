"""A suite-wide leak check: every key and root-key secret created during the run is searched for in what
the run captured (log records, subprocess output, errors clients saw, the SQLite files tests used), and the
run fails if one is found anywhere.

Registered from tests/conftest.py. While the tests run it records:

- secrets: each `server.credentials.new_secret` call in this process (re-bound wherever a module imported
  it, so conftest's `make_caller`, test modules and the in-process server are all covered), each string
  field named `secret` in a response any client channel received (secrets minted by server subprocesses),
  and what `python -m server create-root-key` printed;
- log texts: every record of the root logger at DEBUG (but one line of grpc chatter, `_not_loop_chatter`),
  each captured stream of a subprocess (every `Popen.communicate`, which `subprocess.run` uses too), server
  log files registered with `watch_output_file`, and what pytest captured of each test's stdout and stderr;
- errors: code, details, debug string and metadata of every failed unary call of every channel made with
  `grpc.[aio.]insecure_channel` or `secure_channel` (the interceptors below), with the google.rpc.Status of
  `grpc-status-details-bin` as raw bytes and decoded;
- store files: the raw bytes of every SQLite database, -wal and -journal file under each test's
  `tmp_path` after its teardown, and under the session's temporary directory at the end.

Secrets are known only at the end (a server logs before the client sees its answer), so each text is
reduced at once to its runs of `[A-Za-z0-9_-]` of at least `MIN_TOKEN` characters: a secret's random
part (everything after its last `_`) is such a run or lies inside one, so searching the runs at the end
finds every occurrence of it, and of the full secret that contains it. Findings name the place and the
secret's SHA-256 prefix, never the secret. Any finding fails the run (`pytest_sessionfinish`).

`-p no:tests.secret_watch` turns the watch off, to measure what it costs.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import logging
import re
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from google.rpc import status_pb2

from server import credentials
from server.credentials import ROOT_KEY_PREFIX

__all__ = [
    "AioRecorder",
    "Finding",
    "LogRecorder",
    "SecretWatch",
    "SyncRecorder",
    "Where",
    "active",
    "fingerprint",
    "watch_output_file",
]

KEY, ROOT_KEY = "key", "root-key"
LOG, OUTPUT, CAPTURED, ERROR, STORE = "log record", "subprocess output", "captured test output", "error", "store file"
MIN_TOKEN = 16  # a secret's random part must be at least this long to be searched (new_secret makes 32)
_TOKEN_CHARS = "A-Za-z0-9_-"
_SEARCHABLE = re.compile(f"[{_TOKEN_CHARS}]+")
# Every byte outside the class becomes a space, so `split()` yields the runs: 8x faster than a regex.
_RUNS = bytes(c if _SEARCHABLE.fullmatch(chr(c)) else ord(" ") for c in range(256))
_SQLITE_HEADER = b"SQLite format 3\x00"
_STANDARD_RECORD_FIELDS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}
_FORMATTER = logging.Formatter()


def fingerprint(secret: str) -> str:
    """What a report may show of a secret."""
    return "sha256:" + hashlib.sha256(secret.encode()).hexdigest()[:12]


def random_part(secret: str) -> str:
    return secret.rsplit("_", 1)[-1]


@dataclass(frozen=True)
class Where:
    test: str  # node id of the test running when it was recorded, or "session"
    kind: str  # LOG, OUTPUT, CAPTURED, ERROR or STORE
    detail: str  # logger, command, RPC or file


@dataclass(frozen=True)
class Finding:
    secret_kind: str
    fingerprint: str
    match: str  # "full secret" or "random part"
    where: Where

    def __str__(self) -> str:
        return (
            f"{self.secret_kind} secret {self.fingerprint} ({self.match}) in a {self.where.kind}"
            f" [{self.where.detail}] during {self.where.test}"
        )


class SecretWatch:
    """Records secrets and the texts that must not contain them; `findings()` searches the one in the other."""

    def __init__(self) -> None:
        self.test = "session"
        self._lock = threading.Lock()  # records arrive from the store's and grpc's threads too
        self._secrets: dict[str, str] = {}  # secret -> KEY or ROOT_KEY
        self._unsearchable: dict[str, str] = {}  # fingerprint -> test that made it
        self._tokens: dict[tuple[str, bytes], Where] = {}  # (kind, run) -> first place seen
        self._counts: Counter[str] = Counter()
        self._scanned: set[Path] = set()
        self._pending_files: dict[Path, str] = {}  # log file -> test that started its process
        self.unread: list[str] = []  # files that were gone before they could be read

    # -- secrets --------------------------------------------------------------------------------

    def add_secret(self, secret: str, kind: str | None = None) -> None:
        if kind is None:
            kind = ROOT_KEY if secret.startswith(ROOT_KEY_PREFIX + "_") else KEY
        with self._lock:
            if secret in self._secrets:
                return
            self._secrets[secret] = kind
            random = random_part(secret)
            if len(random) < MIN_TOKEN or not _SEARCHABLE.fullmatch(random):
                self._unsearchable[fingerprint(secret)] = self.test

    def knows(self, secret: str) -> str | None:
        """KEY or ROOT_KEY if `secret` was recorded, else None."""
        return self._secrets.get(secret)

    def add_response(self, response: object) -> None:
        if isinstance(response, Message):
            for secret in _secret_fields(response):
                self.add_secret(secret)

    # -- what must not contain them -------------------------------------------------------------

    def add_text(self, kind: str, detail: str, *texts: str | bytes, test: str | None = None) -> None:
        """One record of `kind`, made during `test` (the current one by default)."""
        joined = b" ".join(text if isinstance(text, bytes) else text.encode("utf-8", "replace") for text in texts)
        runs = [run for run in joined.translate(_RUNS).split() if len(run) >= MIN_TOKEN]
        where = Where(test or self.test, kind, detail)
        with self._lock:
            self._counts[kind] += 1
            for run in runs:
                self._tokens.setdefault((kind, run), where)

    def add_log_record(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
        except Exception:  # a broken format string still shows its parts
            message = repr(record.msg)
        texts = [message, repr(record.args) if record.args else ""]
        if record.exc_info:
            texts.append(record.exc_text or _FORMATTER.formatException(record.exc_info))
        if record.stack_info:
            texts.append(record.stack_info)
        extras = record.__dict__.keys() - _STANDARD_RECORD_FIELDS  # `extra=...`, or set by filters
        if extras:
            texts.append(repr({name: record.__dict__[name] for name in extras}))
        self.add_text(LOG, f"{record.name} {record.levelname}", "\n".join(texts))

    def add_error(self, error: grpc.RpcError, method: str) -> None:
        code = _call(error, "code")
        texts: list[str | bytes] = [
            str(code),
            str(_call(error, "details") or ""),
            str(_call(error, "debug_error_string") or ""),
        ]
        for key, value in [*(_call(error, "initial_metadata") or ()), *(_call(error, "trailing_metadata") or ())]:
            texts.append(f"{key}: {value}" if isinstance(value, str) else value)
            if key == "grpc-status-details-bin":
                # Decoded to its details' own bytes, where every string field of every detail type is verbatim
                # UTF-8 (text_format would spell them out too, at 300 us an error).
                status = status_pb2.Status.FromString(value)
                texts.extend([status.message, *(detail.value for detail in status.details)])
        self.add_text(ERROR, f"{method} {getattr(code, 'name', code)}", *texts)

    def add_process_output(self, args: object, returncode: int | None, stdout: object, stderr: object) -> None:
        command = _command(args)
        if _prints_root_key(args, returncode, stdout):
            # `create-root-key` prints the secret on stdout, by design: that is where it comes from.
            self.add_secret(_text(stdout).strip(), ROOT_KEY)
            stdout = None
        for name, output in (("stdout", stdout), ("stderr", stderr)):
            if isinstance(output, (str, bytes)) and output:
                self.add_text(OUTPUT, f"{name} of {command}", output)

    def watch_output_file(self, path: Path) -> None:
        """A file a subprocess writes its log to: read once the current test is over (`after_test`)."""
        self._pending_files.setdefault(Path(path), self.test)

    def add_store_file(self, path: Path, test: str | None = None) -> None:
        self.add_text(STORE, str(path), path.read_bytes(), test=test)
        self._scanned.add(path)

    def scan_directory(self, directory: Path, test: str | None = None) -> None:
        """Every SQLite database, -wal and -journal file under `directory` not read before."""
        for path in sorted(directory.rglob("*")):
            if path not in self._scanned and _is_store_file(path):
                self.add_store_file(path, test)

    def after_test(self, tmp_path: Path | None) -> None:
        """Reads the log files the test's subprocesses wrote and the store files in its `tmp_path`."""
        pending, self._pending_files = self._pending_files, {}
        for path, test in pending.items():
            if path.is_file():
                self.add_text(OUTPUT, f"log file {path}", path.read_bytes(), test=test)
            elif not path.parent.is_dir():
                self.unread.append(f"{path} (of {test})")
            # else: never written, as when the process could not start
        if tmp_path is not None:
            if tmp_path.is_dir():
                self.scan_directory(tmp_path)
            else:
                self.unread.append(f"{tmp_path} (of {self.test}; removed by tmp_path_retention_policy?)")

    # -- the verdict -----------------------------------------------------------------------------

    def findings(self) -> list[Finding]:
        with self._lock:
            secrets = dict(self._secrets)
            tokens = list(self._tokens.items())
        by_random = {random_part(s).encode(): s for s in secrets}
        lengths = sorted({len(r) for r in by_random if len(r) >= MIN_TOKEN})
        found: dict[tuple[str, Where], Finding] = {}
        for (_, token), where in tokens:
            for length in lengths:
                for start in range(len(token) - length + 1):
                    secret = by_random.get(token[start : start + length])
                    if secret is not None and (secret, where) not in found:
                        match = "full secret" if secret.encode() in token else "random part"
                        found[secret, where] = Finding(secrets[secret], fingerprint(secret), match, where)
        return list(found.values())

    def problems(self) -> list[str]:
        """Why the run must fail: every leak, and every secret or file the watch could not search."""
        problems = [f"found: {finding}" for finding in self.findings()]
        for secret_fingerprint, test in self._unsearchable.items():
            problems.append(
                f"cannot search for {secret_fingerprint} (made during {test}): too short, or not [{_TOKEN_CHARS}]"
            )
        problems.extend(f"could not read {name}" for name in self.unread)
        return problems

    def summary(self, problems: list[str] | None = None) -> str:
        problems = self.problems() if problems is None else problems
        kinds = Counter(self._secrets.values())
        logs = self._counts[LOG] + self._counts[OUTPUT] + self._counts[CAPTURED]
        verdict = "none found" if not problems else f"{len(problems)} problem(s), listed above"
        return (
            f"secret watch: {kinds[KEY]} key secrets and {kinds[ROOT_KEY]} root-key secrets, searched in"
            f" {logs} log records, {self._counts[ERROR]} errors, {self._counts[STORE]} store files: {verdict}"
        )


def _call(error: object, name: str) -> Any:
    method = getattr(error, name, None)
    return method() if callable(method) else None


def _text(output: object) -> str:
    return output.decode(errors="replace") if isinstance(output, bytes) else str(output)


def _command(args: object) -> str:
    words = [str(a) for a in args] if isinstance(args, (list, tuple)) else [str(args)]
    words = ["python" if word == sys.executable else word for word in words]
    return " ".join(words)[:100]


def _prints_root_key(args: object, returncode: int | None, stdout: object) -> bool:
    words = [_text(a) for a in args] if isinstance(args, (list, tuple)) else []
    return "create-root-key" in words and returncode == 0 and len(_text(stdout or "").split()) == 1


def _is_store_file(path: Path) -> bool:
    if not path.is_file():
        return False
    if path.name.endswith(("-wal", "-journal")):
        return True
    with path.open("rb") as file:
        return file.read(len(_SQLITE_HEADER)) == _SQLITE_HEADER


# -- secrets in responses --------------------------------------------------------------------------

_HOLDS_SECRET: dict[str, bool] = {}


def _is_secret_field(field: FieldDescriptor) -> bool:
    return field.name == "secret" and field.type == FieldDescriptor.TYPE_STRING


def _holds_secret(descriptor: Descriptor) -> bool:
    """Whether a message of this type can hold a `secret` string field at any depth (cached per type)."""
    known = _HOLDS_SECRET.get(descriptor.full_name)
    if known is None:
        known = _HOLDS_SECRET[descriptor.full_name] = _search_type(descriptor, set())
    return known


def _search_type(descriptor: Descriptor, seen: set[str]) -> bool:
    seen.add(descriptor.full_name)
    for field in descriptor.fields:
        if _is_secret_field(field):
            return True
        nested = field.message_type
        if nested is not None and nested.full_name not in seen and _search_type(nested, seen):
            return True
    return False


def _secret_fields(message: Message) -> Iterator[str]:
    if not _holds_secret(message.DESCRIPTOR):
        return
    for field, value in message.ListFields():
        if _is_secret_field(field):
            yield from value if field.is_repeated else (value,)
        elif field.type == FieldDescriptor.TYPE_MESSAGE:
            values: Iterable[Any]
            if field.message_type.GetOptions().map_entry:
                message_values = field.message_type.fields_by_name["value"].type == FieldDescriptor.TYPE_MESSAGE
                values = value.values() if message_values else ()
            else:
                values = value if field.is_repeated else (value,)
            for nested in values:
                yield from _secret_fields(nested)


# -- the recorders ---------------------------------------------------------------------------------


def _method(details: grpc.ClientCallDetails) -> str:
    method = details.method
    return method.decode() if isinstance(method, bytes) else str(method)


class AioRecorder(grpc.aio.UnaryUnaryClientInterceptor):
    """Records the secrets of every answer and every error of an asyncio channel's unary calls."""

    def __init__(self, watch: SecretWatch) -> None:
        self._watch = watch

    async def intercept_unary_unary(
        self, continuation: Callable[..., Any], client_call_details: grpc.aio.ClientCallDetails, request: Any
    ) -> Any:
        call = await continuation(client_call_details, request)
        try:
            response = await call
        except grpc.aio.AioRpcError as error:
            self._watch.add_error(error, _method(client_call_details))
        else:
            self._watch.add_response(response)
        return call  # done: awaiting it again gives the same answer or raises the same error


class SyncRecorder(grpc.UnaryUnaryClientInterceptor):
    """The same for a synchronous channel; a done callback, so `.future()` calls do not block."""

    def __init__(self, watch: SecretWatch) -> None:
        self._watch = watch

    def intercept_unary_unary(
        self, continuation: Callable[..., Any], client_call_details: grpc.ClientCallDetails, request: Any
    ) -> Any:
        outcome = continuation(client_call_details, request)
        outcome.add_done_callback(functools.partial(self._done, _method(client_call_details)))
        return outcome

    def _done(self, method: str, outcome: grpc.Future) -> None:
        if outcome.cancelled():
            return
        error = outcome.exception()
        if error is None:
            self._watch.add_response(outcome.result())
        else:
            self._watch.add_error(error, method)  # type: ignore[arg-type]


class LogRecorder(logging.Handler):
    def __init__(self, watch: SecretWatch) -> None:
        super().__init__(logging.DEBUG)
        self._watch = watch

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._watch.add_log_record(record)
        except Exception:
            self.handleError(record)


# -- the session -----------------------------------------------------------------------------------

_session: SecretWatch | None = None  # from the first test on
_handler: LogRecorder | None = None  # while the tests run
_report: list[str] | None = None  # the session's problems, once it is over


def active() -> SecretWatch | None:
    """The session's watch, while tests run."""
    return _session


def watch_output_file(path: Path) -> None:
    """Have the session read `path`, a file a subprocess logs to, once the current test is over."""
    if _session is not None:
        _session.watch_output_file(path)


def _with_interceptor(original: Callable[..., Any], interceptor: grpc.aio.ClientInterceptor) -> Callable[..., Any]:
    signature = inspect.signature(original)

    @functools.wraps(original)
    def make(*args: Any, **kwargs: Any) -> Any:
        bound = signature.bind(*args, **kwargs)
        bound.arguments["interceptors"] = [*(bound.arguments.get("interceptors") or ()), interceptor]
        return original(*bound.args, **bound.kwargs)

    return make


def _intercepted(original: Callable[..., Any], interceptor: grpc.UnaryUnaryClientInterceptor) -> Callable[..., Any]:
    @functools.wraps(original)
    def make(*args: Any, **kwargs: Any) -> Any:
        return grpc.intercept_channel(original(*args, **kwargs), interceptor)

    return make


def _recording_new_secret(watch: SecretWatch) -> Callable[..., str]:
    original = credentials.new_secret

    @functools.wraps(original)
    def new_secret(prefix: str = "") -> str:
        secret = original(prefix)
        watch.add_secret(secret)
        return secret

    return new_secret


def _rebind_everywhere(monkeypatch: pytest.MonkeyPatch, replacements: Mapping[object, object]) -> None:
    """Replace each object by its replacement in every loaded module that holds it, under any name, so that
    `from grpc.aio import insecure_channel` and `from server.credentials import new_secret` are reached too."""
    by_id = {id(original): replacement for original, replacement in replacements.items()}
    for module in list(sys.modules.values()):
        namespace = getattr(module, "__dict__", None)
        if not isinstance(namespace, dict):
            continue
        for name, value in list(namespace.items()):
            replacement = by_id.get(id(value))
            if replacement is not None:
                monkeypatch.setattr(module, name, replacement)


def _not_loop_chatter(record: logging.LogRecord) -> bool:
    """grpc's asyncio layer logs this at DEBUG on every call, three records in four of a test run; it holds the id
    of an event loop and nothing else, and every handler formats it. Every other record of grpc stays."""
    return not str(record.msg).startswith("[_cygrpc] Loaded running loop: id(loop)=")


@contextmanager
def _installed(watch: SecretWatch) -> Iterator[LogRecorder]:
    aio, sync = AioRecorder(watch), SyncRecorder(watch)
    original_communicate = subprocess.Popen.communicate

    def communicate(process: subprocess.Popen[Any], *args: Any, **kwargs: Any) -> tuple[Any, Any]:
        stdout, stderr = original_communicate(process, *args, **kwargs)
        watch.add_process_output(process.args, process.returncode, stdout, stderr)
        return stdout, stderr

    handler = LogRecorder(watch)
    root = logging.getLogger()
    level = root.level
    grpc_core = logging.getLogger("grpc._cython.cygrpc")
    with pytest.MonkeyPatch.context() as monkeypatch:
        _rebind_everywhere(
            monkeypatch,
            {
                grpc.aio.insecure_channel: _with_interceptor(grpc.aio.insecure_channel, aio),
                grpc.aio.secure_channel: _with_interceptor(grpc.aio.secure_channel, aio),
                grpc.insecure_channel: _intercepted(grpc.insecure_channel, sync),
                grpc.secure_channel: _intercepted(grpc.secure_channel, sync),
                credentials.new_secret: _recording_new_secret(watch),
            },
        )
        monkeypatch.setattr(subprocess.Popen, "communicate", communicate)
        root.addHandler(handler)
        root.setLevel(logging.DEBUG)
        grpc_core.addFilter(_not_loop_chatter)
        try:
            yield handler
        finally:
            grpc_core.removeFilter(_not_loop_chatter)
            root.removeHandler(handler)
            root.setLevel(level)


@pytest.hookimpl(wrapper=True)
def pytest_runtestloop(session: pytest.Session) -> Iterator[None]:
    global _session, _handler
    if session.config.option.collectonly:
        return (yield)
    _session = watch = SecretWatch()
    with _installed(watch) as _handler:
        try:
            return (yield)
        finally:
            _handler = None
            # Module and session fixtures are torn down by now: their stores are closed.
            basetemp = getattr(getattr(session.config, "_tmp_path_factory", None), "_basetemp", None)
            if basetemp is not None and Path(basetemp).is_dir():
                watch.scan_directory(Path(basetemp), "session")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Iterator[object]:
    if _session is not None and _handler is not None:
        _session.test = item.nodeid
        root = logging.getLogger()
        if _handler not in root.handlers:  # something replaced the root logger's handlers
            root.addHandler(_handler)
    return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item) -> Iterator[None]:
    tmp_path = getattr(item, "funcargs", {}).get("tmp_path")
    try:
        return (yield)
    finally:
        if _session is not None:
            _session.after_test(tmp_path)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    # The teardown report holds what every phase captured: grpc's C core, for one, writes to fd 2.
    if _session is not None and report.when == "teardown" and (report.capstdout or report.capstderr):
        _session.add_text(CAPTURED, "stdout and stderr", report.capstdout, report.capstderr)


def pytest_sessionfinish(session: pytest.Session) -> None:
    global _report
    if _session is None:
        return
    _report = _session.problems()
    if _report and session.exitstatus in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED):
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _session is None or _report is None:
        return
    if _report:
        terminalreporter.write_sep("=", "secret watch: secrets where they must never be", red=True)
        for line in _report:
            terminalreporter.write_line(line)
    terminalreporter.write_line(_session.summary(_report), red=bool(_report), green=not _report)
