"""`serve --workers N`: N server processes on one port (SO_REUSEPORT) over one database file.

The kernel spreads new connections over the workers. Each worker is a whole
server with its own store connections; SQLite's locking orders their writes,
and every read goes to the committed state of the file, so a change one worker
acknowledged is visible to the next call any worker takes. This process only
starts the workers, passes SIGTERM and SIGINT on to them, and, if one worker
ends on its own, stops the others rather than serve on with fewer.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
from collections.abc import Callable, Mapping, Sequence
from types import FrameType

__all__ = ["supervise"]

log = logging.getLogger("keyscope")


def supervise(
    worker_command: Sequence[str],
    count: int,
    environment: Mapping[str, str] | None = None,
    exited: Callable[[int], None] | None = None,
) -> int:
    """Run `count` copies of `worker_command` (with `environment` added to theirs) until they end; 0 if they were
    asked to stop and all exited 0. `exited` hears the pid of each worker that ended."""
    workers: list[subprocess.Popen[bytes]] = []
    stopping = False

    def stop_all(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        for worker in workers:
            if worker.returncode is None:
                worker.send_signal(signal.SIGTERM)

    # Before the first worker starts, so that no signal can leave workers behind.
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, stop_all)
    for _ in range(count):
        if not stopping:
            workers.append(subprocess.Popen(list(worker_command), env={**os.environ, **(environment or {})}))
    log.info("started %d workers: %s", len(workers), " ".join(str(w.pid) for w in workers))

    failed = False
    by_pid = {worker.pid: worker for worker in workers}
    while any(worker.returncode is None for worker in workers):
        pid, status = os.waitpid(-1, 0)
        worker = by_pid.get(pid)
        if worker is None:
            continue
        worker.returncode = os.waitstatus_to_exitcode(status)
        if exited is not None:
            exited(pid)
        if not stopping:
            log.error("worker %d exited with code %d; stopping the others", pid, worker.returncode)
            failed = True
            stop_all(signal.SIGTERM, None)
    codes = [worker.returncode for worker in workers]
    log.info("workers stopped with codes %s", codes)
    return 1 if failed or any(codes) else 0
