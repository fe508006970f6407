"""A suite-wide leak check: every key and root-key secret created during the run is searched for in what
the run captured (log records, subprocess output, errors clients saw, the SQLite files tests used), and the
run fails if one is found anywhere.

Registered from tests/conftest.py. While the tests run it records:

- secrets: each `keyscope_server.credentials.new_secret` call in this process (re-bound wherever a module imported
  it, so conftest's `make_caller`, test modules and the in-process server are all covered), each string
  field named `secret` in a response any client channel received (secrets minted by server subprocesses),
  and what `python -m keyscope_server create-root-key` printed;
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

The watch itself: tests/secret_search.py; how it is fed: tests/secret_recording.py.

`-p no:tests.secret_watch` turns the watch off, to measure what it costs.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.secret_recording import LogRecorder, installed
from tests.secret_search import CAPTURED, SecretWatch

__all__ = ["active", "watch_output_file"]


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


@pytest.hookimpl(wrapper=True)
def pytest_runtestloop(session: pytest.Session) -> Iterator[None]:
    global _session, _handler
    if session.config.option.collectonly:
        return (yield)
    _session = watch = SecretWatch()
    with installed(watch) as _handler:
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
