"""How the server logs: text or JSON lines, every record with the request id of its call; and the warnings of failed
authentication, at most so many an interval (`auth_failure_warnings`)."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, TextIO

from pythonjsonlogger.json import JsonFormatter

from keyscope_server.request_context import request_id_var

__all__ = [
    "LOG_FORMATS",
    "AuthFailureWarnings",
    "RequestIdFilter",
    "auth_failure_warnings",
    "configure_logging",
    "log_handler",
]

LOG_FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(process)d %(name)s [%(request_id)s] %(message)s"
NO_REQUEST = request_id_var.get()  # what a record outside any call carries ("-")


class RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get()
        return True


class _JsonLines(JsonFormatter):
    """One JSON object a line: time (RFC 3339, UTC), level, logger, message, pid, request_id (null outside a call),
    then the record's extras (the access log's method, code, duration_ms, caller, peer, outcome), and a traceback as
    the string `exception`. json.dumps escapes every newline, so a record is one line whatever it holds."""

    def __init__(self) -> None:
        super().__init__(
            ["levelname", "name", "message", "process", "request_id"],
            rename_fields={"levelname": "level", "name": "logger", "process": "pid", "exc_info": "exception"},
            timestamp="time",
        )

    def process_log_record(self, log_data: dict[str, Any]) -> dict[str, Any]:
        if log_data.get("request_id") == NO_REQUEST:
            log_data["request_id"] = None
        return log_data


def log_handler(log_format: str = "text", stream: TextIO | None = None) -> logging.Handler:
    """A handler writing `log_format` ("text" or "json") lines to `stream` (default stderr)."""
    if log_format not in LOG_FORMATS:
        raise ValueError(f"log format {log_format!r} is not one of {', '.join(LOG_FORMATS)}")
    handler = logging.StreamHandler(stream)
    handler.setFormatter(_JsonLines() if log_format == "json" else logging.Formatter(TEXT_FORMAT))
    handler.addFilter(RequestIdFilter())
    return handler


def configure_logging(level: str, log_format: str = "text", stream: TextIO | None = None) -> None:
    root = logging.getLogger()
    root.handlers[:] = [log_handler(log_format, stream)]
    root.setLevel(level.upper())


class AuthFailureWarnings:
    """A warning for each failed authentication (the peer and the reason: the error's message, which never holds the
    credential), at most `limit` in `interval` seconds, so that a flood of bad credentials cannot fill a disk. The
    failures beyond are counted, and one warning says how many when the interval ends; the next failure opens a new
    interval."""

    def __init__(self, limit: int = 10, interval: float = 60.0) -> None:
        self._log = logging.getLogger("keyscope.auth")
        self._timer: asyncio.TimerHandle | None = None
        self.configure(limit, interval)

    def configure(self, limit: int, interval: float) -> None:
        """Set the limit and start afresh (nothing logged, nothing held back)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.limit = limit
        self.interval = interval
        self._ends = 0.0  # time.monotonic() at which the current interval ends
        self._logged = 0
        self._suppressed = 0

    def failed(self, peer: str, reason: str) -> None:
        now = time.monotonic()
        if now >= self._ends:
            self._end_interval()
            self._ends = now + self.interval
        if self._logged < self.limit:
            self._logged += 1
            self._log.warning(
                "authentication failed: %s (peer %s)", reason, peer, extra={"peer": peer, "reason": reason}
            )
            return
        self._suppressed += 1
        if self._timer is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # no loop to wake us: the next failure after the interval reports the count
                return
            self._timer = loop.call_later(self._ends - now, self._end_interval)

    def _end_interval(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._suppressed:
            self._log.warning(
                "%d more authentication failures not logged: at most %d are logged in %gs",
                self._suppressed,
                self.limit,
                self.interval,
                extra={"suppressed": self._suppressed},
            )
        self._ends = 0.0
        self._logged = 0
        self._suppressed = 0


auth_failure_warnings = AuthFailureWarnings()
