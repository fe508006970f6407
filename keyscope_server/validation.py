"""Request field rules. Each check records field violations; `done()` raises them all at once.

Servicers validate the whole request before touching the store, so a bad
request changes nothing and the caller learns every bad field in one answer.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence

from keyscope_server.errors import FieldViolation, InvalidArgument
from keyscope_server.store.models import ScopeSpec

__all__ = ["MAX_LIST", "ScopeSpec", "Validator"]

ID_PATTERN = re.compile(r"[a-zA-Z0-9_]+")
PERMISSION_PATTERN = re.compile(r"[a-zA-Z0-9_:\-.*]+")
ROLE_PATTERN = re.compile(r"[a-zA-Z0-9_:\-.]+")
PREFIX_PATTERN = re.compile(r"[a-zA-Z0-9_]+")
ETAG_PATTERN = re.compile(r"[\x21-\x7e]+")  # printable ASCII without spaces
ACTION_PATTERN = re.compile(r"[a-zA-Z]+")

MAX_ID = 64
MAX_PERMISSION = 280
MAX_DESCRIPTION = 500
MAX_NAME = 200
MAX_ROLE = 64
MAX_PREFIX = 16
MAX_SECRET = 512
MAX_LIST = 1000
MAX_ETAG = 64
MAX_PAGE_SIZE = 1000
MAX_TIMESTAMP_SECONDS = 253402300799  # 9999-12-31T23:59:59Z


class Validator:
    def __init__(self) -> None:
        self._violations: list[FieldViolation] = []

    def add(self, field: str, description: str) -> None:
        self._violations.append(FieldViolation(field, description))

    def done(self) -> None:
        if self._violations:
            raise InvalidArgument(self._violations)

    def id(self, field: str, value: str, prefix: str) -> None:
        """A database id such as `key_...`: required, `^[a-zA-Z0-9_]+$`."""
        if not value:
            self.add(field, "is required")
        elif len(value) > MAX_ID or not ID_PATTERN.fullmatch(value):
            self.add(field, f"must match ^[a-zA-Z0-9_]+$ and be at most {MAX_ID} characters, like {prefix}_3f9c2a")

    def text(self, field: str, value: str, *, max_length: int, required: bool = False, multiline: bool = False) -> None:
        """Free text shown to people: no control characters (but tabs and newlines when multiline)."""
        allowed = "\t\n" if multiline else ""
        if required and not value.strip():
            self.add(field, "is required")
        elif len(value) > max_length:
            self.add(field, f"must be at most {max_length} characters (got {len(value)})")
        elif any(unicodedata.category(ch) == "Cc" and ch not in allowed for ch in value):
            self.add(field, "must not contain control characters")

    def permission_name(self, field: str, value: str) -> bool:
        if not value:
            self.add(field, "must not be empty")
        elif len(value) > MAX_PERMISSION:
            self.add(field, f"must be at most {MAX_PERMISSION} characters (got {len(value)})")
        elif not PERMISSION_PATTERN.fullmatch(value):
            self.add(field, r"must match ^[a-zA-Z0-9_:\-\.\*]+$")
        else:
            return True
        return False

    def permission_names(self, field: str, values: Sequence[str]) -> list[str]:
        """A list of permission names; duplicates count once. Returns them in first-seen order."""
        if len(values) > MAX_LIST:
            self.add(field, f"must hold at most {MAX_LIST} names (got {len(values)})")
            return []
        for index, value in enumerate(values):
            self.permission_name(f"{field}[{index}]", value)
        return list(dict.fromkeys(values))

    def role_names(self, field: str, values: Sequence[str]) -> list[str]:
        if len(values) > MAX_LIST:
            self.add(field, f"must hold at most {MAX_LIST} names (got {len(values)})")
            return []
        for index, value in enumerate(values):
            self.role_name(f"{field}[{index}]", value)
        return list(dict.fromkeys(values))

    def role_name(self, field: str, value: str) -> None:
        if not value:
            self.add(field, "must not be empty")
        elif len(value) > MAX_ROLE or not ROLE_PATTERN.fullmatch(value):
            self.add(field, rf"must match ^[a-zA-Z0-9_:\-\.]+$ and be at most {MAX_ROLE} characters")

    def scopes(self, field: str, scopes: Iterable[tuple[str, str]]) -> list[ScopeSpec]:
        """A complete scope list: values unique, at most MAX_LIST entries."""
        specs = [ScopeSpec(value, description) for value, description in scopes]
        if len(specs) > MAX_LIST:
            self.add(field, f"must hold at most {MAX_LIST} scopes (got {len(specs)})")
            return []
        first_index: dict[str, int] = {}
        for index, spec in enumerate(specs):
            if self.permission_name(f"{field}[{index}].value", spec.value):
                if spec.value in first_index:
                    self.add(
                        f"{field}[{index}].value", f"duplicates {field}[{first_index[spec.value]}].value {spec.value!r}"
                    )
                else:
                    first_index[spec.value] = index
            self.text(f"{field}[{index}].description", spec.description, max_length=MAX_DESCRIPTION, multiline=True)
        return specs

    def prefix(self, field: str, value: str) -> None:
        if value and (len(value) > MAX_PREFIX or not PREFIX_PATTERN.fullmatch(value)):
            self.add(field, f"must match ^[a-zA-Z0-9_]+$ and be at most {MAX_PREFIX} characters")

    def timestamp(self, field: str, seconds: int, nanos: int) -> bool:
        """A google.protobuf.Timestamp within 1970-01-01 .. 9999-12-31."""
        if 0 <= seconds <= MAX_TIMESTAMP_SECONDS and 0 <= nanos < 1_000_000_000:
            return True
        self.add(field, "must lie between 1970-01-01T00:00:00Z and 9999-12-31T23:59:59Z")
        return False

    def min_revision(self, value: int) -> None:
        if value < 0:
            self.add("min_revision", "must not be negative (0: no constraint)")

    def etag(self, value: str) -> None:
        """Optional; an etag as Keyscope hands them out (any other value simply no longer matches)."""
        if value and (len(value) > MAX_ETAG or not ETAG_PATTERN.fullmatch(value)):
            self.add("etag", f"must be an etag as a read returned it (printable ASCII, at most {MAX_ETAG} characters)")

    def optional_id(self, field: str, value: str) -> None:
        if value and (len(value) > MAX_ID or not ID_PATTERN.fullmatch(value)):
            self.add(field, f"must match ^[a-zA-Z0-9_]+$ and be at most {MAX_ID} characters")

    def action(self, field: str, value: str) -> None:
        if value and (len(value) > MAX_ID or not ACTION_PATTERN.fullmatch(value)):
            self.add(field, "must be an RPC or command name such as SetPermissions")

    def page_size(self, value: int) -> None:
        if not 0 <= value <= MAX_PAGE_SIZE:
            self.add("page_size", f"must lie between 0 (the default, 50) and {MAX_PAGE_SIZE}")

    def secret(self, field: str, value: str) -> None:
        # Never echo the value: it is a secret.
        if not value:
            self.add(field, "is required")
        elif len(value) > MAX_SECRET:
            self.add(field, f"must be at most {MAX_SECRET} characters")
