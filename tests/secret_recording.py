"""How the secret watch hears of secrets and of texts: client interceptors on every channel, a log handler on the
root logger, `new_secret` and `Popen.communicate` wrapped, all installed at once for the session (`installed`)."""

from __future__ import annotations

import functools
import inspect
import logging
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import grpc
import pytest

from keyscope_server import credentials
from tests.secret_search import SecretWatch

__all__ = ["AioRecorder", "LogRecorder", "SyncRecorder", "installed"]


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
    `from grpc.aio import insecure_channel` and `from keyscope_server.credentials import new_secret` are reached too."""
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
def installed(watch: SecretWatch) -> Iterator[LogRecorder]:
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
