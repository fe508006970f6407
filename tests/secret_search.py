"""The secret watch's records and its search: secrets, the texts that must not hold them, and the findings.

A `SecretWatch` reduces each text at once to its runs of `[A-Za-z0-9_-]` of at least `MIN_TOKEN` characters
and, at the end, finds every secret whose random part is in one of them (see tests/secret_watch.py).
"""

from __future__ import annotations

import hashlib
import logging
import re
import sys
import threading
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from google.rpc import status_pb2

from keyscope_server.credentials import ROOT_KEY_PREFIX

__all__ = [
    "CAPTURED",
    "ERROR",
    "KEY",
    "LOG",
    "OUTPUT",
    "ROOT_KEY",
    "STORE",
    "Finding",
    "SecretWatch",
    "Where",
    "fingerprint",
    "random_part",
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

    def scan_postgres_cluster(self, data: Path) -> None:
        """A PostgreSQL cluster's files: its databases, its WAL (every row any test wrote, tests' databases
        dropped since included, as long as the WAL is kept) and its server log."""
        paths = [*(data / "base").rglob("*"), *(data / "pg_wal").glob("*"), data / "server.log"]
        for path in sorted(paths):
            if path.is_file() and path not in self._scanned:
                self.add_store_file(path, "postgresql")

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
