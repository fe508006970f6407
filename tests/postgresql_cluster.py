"""A throwaway PostgreSQL server for the tests and the benchmark: `initdb` into a temporary directory, `pg_ctl`
to start it on 127.0.0.1 and a free port, stopped and removed at the end.

`initdb` and `postgres` refuse to run as root; run as root (as CI is), they run as the `postgres` user, which
the Debian and Ubuntu packages create. The binaries come from KEYSCOPE_PG_BIN, else the newest
/usr/lib/postgresql/N/bin, else PATH.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["PASSWORD_ROLE", "Cluster", "PostgresMissing", "find_binaries", "running_cluster"]

HOW_TO_GET_IT = (
    "PostgreSQL's server binaries (initdb, pg_ctl, postgres) were not found: install them "
    "(Debian/Ubuntu: apt-get install postgresql) or set KEYSCOPE_PG_BIN to their directory"
)

# A role that must give a password (SCRAM) over TCP, for the tests that check a password never shows.
PASSWORD_ROLE = "keyscope_password"


class PostgresMissing(RuntimeError):
    pass


def find_binaries() -> Path:
    chosen = os.environ.get("KEYSCOPE_PG_BIN")
    if chosen:
        candidates = [Path(chosen)]
    else:
        candidates = sorted(
            Path("/usr/lib/postgresql").glob("*/bin"),
            key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
            reverse=True,
        )
        on_path = shutil.which("pg_ctl")
        if on_path:
            candidates.append(Path(on_path).parent)
    for candidate in candidates:
        if all((candidate / name).exists() for name in ("initdb", "pg_ctl", "postgres")):
            return candidate
    raise PostgresMissing(HOW_TO_GET_IT)


def _as_user(user: str | None, command: Sequence[str]) -> list[str]:
    if user is None:
        return list(command)
    runuser = shutil.which("runuser", path=f"{os.environ.get('PATH', '')}:/usr/sbin:/sbin") or "runuser"
    return [runuser, "-u", user, "--", *command]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class Cluster:
    """A running server: connect as `superuser` (trusted, no password) on 127.0.0.1:`port`."""

    bin: Path
    data: Path
    port: int
    superuser: str
    run_as: str | None  # the OS user its processes run as, when we are root

    def url(self, database: str = "postgres", user: str | None = None, password: str | None = None) -> str:
        who = user or self.superuser
        if password is not None:
            who = f"{who}:{password}"
        return f"postgresql://{who}@127.0.0.1:{self.port}/{database}"

    def _command(self, args: Sequence[str]) -> list[str]:
        return _as_user(self.run_as, args)

    def pg_ctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self._command([str(self.bin / "pg_ctl"), "-D", str(self.data), "-w", "-t", "60", *args]),
            capture_output=True,
            text=True,
            check=check,
        )

    def start(self) -> None:
        self.pg_ctl("-l", str(self.data / "server.log"), "start")

    def stop(self, mode: str = "fast") -> None:
        """`immediate` is a crash: no checkpoint, recovery from the WAL at the next start."""
        self.pg_ctl("-m", mode, "stop")

    def restart(self, mode: str = "fast") -> None:
        self.stop(mode)
        self.start()

    def psql(self, sql: str, database: str = "postgres") -> str:
        done = subprocess.run(
            [str(self.bin / "psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", self.url(database)],
            input=sql,
            capture_output=True,
            text=True,
            check=True,
        )
        return done.stdout.strip()


def _hba() -> str:
    return (
        f"local all all trust\nhost all {PASSWORD_ROLE} 127.0.0.1/32 scram-sha-256\nhost all all 127.0.0.1/32 trust\n"
    )


def _stop_abandoned(bin_dir: Path) -> None:
    """Stop the clusters of earlier runs that ended without stopping theirs (killed, say): a cluster's
    directory names the process that started it."""
    for root in Path(tempfile.gettempdir()).glob("keyscope-pg-*"):
        try:
            owner = int((root / "owner.pid").read_text())
        except (OSError, ValueError):
            continue  # being set up, or not ours
        if Path(f"/proc/{owner}").exists():
            continue
        user = root.stat().st_uid
        run_as = pwd.getpwuid(user).pw_name if os.geteuid() == 0 and user != 0 else None
        stop = [str(bin_dir / "pg_ctl"), "-D", str(root / "data"), "-m", "immediate", "stop"]
        subprocess.run(_as_user(run_as, stop), capture_output=True, check=False)
        shutil.rmtree(root, ignore_errors=True)


@contextlib.contextmanager
def running_cluster(settings: dict[str, str] | None = None) -> Iterator[Cluster]:
    """A new cluster, running until the block ends. `settings` go to postgresql.conf."""
    bin_dir = find_binaries()
    run_as = None
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            raise PostgresMissing("running as root, and there is no `postgres` user to run PostgreSQL as") from None
        run_as = "postgres"
    _stop_abandoned(bin_dir)
    root = Path(tempfile.mkdtemp(prefix="keyscope-pg-"))
    data = root / "data"
    if run_as:
        record = pwd.getpwnam(run_as)
        os.chown(root, record.pw_uid, record.pw_gid)
    superuser = run_as or pwd.getpwuid(os.geteuid()).pw_name
    cluster = None
    try:
        (root / "owner.pid").write_text(str(os.getpid()))
        command = [str(bin_dir / "initdb"), "-D", str(data), "-U", superuser, "-A", "trust", "-E", "UTF8", "--no-sync"]
        subprocess.run(
            _as_user(run_as, command),
            capture_output=True,
            text=True,
            check=True,
        )
        conf = {
            "listen_addresses": "'127.0.0.1'",
            "unix_socket_directories": f"'{root}'",
            "max_connections": "300",
            "password_encryption": "'scram-sha-256'",
            **(settings or {}),
        }
        for attempt in range(5):
            port = _free_port()
            lines = "".join(f"{name} = {value}\n" for name, value in {**conf, "port": str(port)}.items())
            (data / "postgresql.auto.conf").write_text(lines)
            (data / "pg_hba.conf").write_text(_hba())
            cluster = Cluster(bin_dir, data, port, superuser, run_as)
            if cluster.pg_ctl("-l", str(data / "server.log"), "start", check=False).returncode == 0:
                break
            cluster = None
            if attempt == 4:
                raise RuntimeError("PostgreSQL did not start: " + (data / "server.log").read_text()[-2000:])
            time.sleep(0.1)  # the port was taken between our check and its bind: try another
        assert cluster is not None
        yield cluster
    finally:
        if cluster is not None:
            cluster.pg_ctl("-m", "immediate", "stop", check=False)
        shutil.rmtree(root, ignore_errors=True)
