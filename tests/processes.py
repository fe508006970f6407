"""Running `python -m keyscope_server` as a separate process, as people and deployments do."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests import secret_watch

ROOT = Path(__file__).resolve().parent.parent


def server_env(**extra: str) -> dict[str, str]:
    """This environment without any KEYSCOPE_ or OpenTelemetry (OTEL_) setting of the developer's, plus `extra`."""
    env = {name: value for name, value in os.environ.items() if not name.startswith(("KEYSCOPE_", "OTEL_"))}
    return {**env, "PYTHONPATH": str(ROOT), **extra}


def run(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "keyscope_server", *args],
        cwd=cwd,
        env=server_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )


def create_root_key(cwd: Path, db: Path | str, *permissions: str) -> str:
    flags = [arg for p in permissions for arg in ("-p", p)]
    result = run(cwd, "create-root-key", "--db", str(db), *flags)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def children_of(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue  # ended meanwhile
            # The parent pid is the second field after the command name in parentheses.
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry))
    return found


def alive(pid: int) -> bool:
    """Running or sleeping; a zombie (ended, not yet reaped) counts as ended."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def descendants_of(pid: int) -> list[int]:
    found = children_of(pid)
    return found + [d for child in found for d in descendants_of(child)]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_serve(
    cwd: Path,
    db: Path | str,
    port: int,
    *flags: str,
    log: Path | None = None,
    credentials: grpc.ChannelCredentials | None = None,
    env: dict[str, str] | None = None,
    python: str = sys.executable,
) -> subprocess.Popen[str]:
    """`python -m keyscope_server serve`, its log captured, once its health check answers SERVING (over TLS with
    `credentials`), run by `python` (another virtual environment's, say).

    With `log`, stdout and stderr are appended to that file instead of piped: a pipe nobody reads
    fills up under load (a log line per call) and stalls the server.
    """
    command = [python, "-m", "keyscope_server", "serve", "--db", str(db), "--port", str(port), *flags]
    env = env or server_env()
    if log is None:
        process = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    else:
        secret_watch.watch_output_file(log)  # searched for secrets once the test is over
        with log.open("a") as output:  # the child keeps a descriptor of its own
            process = subprocess.Popen(command, cwd=cwd, env=env, stdout=output, stderr=subprocess.STDOUT, text=True)
    target = f"127.0.0.1:{port}"
    channel = grpc.insecure_channel(target) if credentials is None else grpc.secure_channel(target, credentials)
    try:
        with channel:
            grpc.channel_ready_future(channel).result(timeout=30)
            answer = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
            assert answer.status == health_pb2.HealthCheckResponse.SERVING
    except BaseException:
        process.kill()
        process.communicate()
        raise
    return process


def stop(process: subprocess.Popen[str], sig: int) -> tuple[int, str]:
    """Send `sig`, wait for the exit; the exit code and all the process wrote (stdout, then stderr: the log)."""
    process.send_signal(sig)
    try:
        stdout, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    return process.returncode, (stdout or "") + (stderr or "")  # both None when start_serve wrote to a `log`
