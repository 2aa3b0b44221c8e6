"""One run per folder: an exclusive ``flock`` on ``<folder>/.run.lock``, held for the run's life.

Two runs writing one OUTPUT_DIR would interleave checkpoints, metrics and status; the second is refused (bad
input, exit code 2) with who holds the folder, rather than made to wait for a run that may take hours. The kernel
drops the lock when its holder exits, however it exits, so a killed run never leaves a stale lock.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import time
from typing import IO, Optional

from compressreid.errors import ConfigError

LOCK_FILE = ".run.lock"


class FolderLock:
    """The lock of one run folder; ``acquire`` before writing anything into it, ``release`` when the run ends.

    Args:
        folder: the run folder (must exist).
        tool: what is running, recorded in the lock file for the message another run gets.
    """

    def __init__(self, folder: str, tool: str):
        self.folder, self.tool = os.path.abspath(folder), tool
        self.path = os.path.join(self.folder, LOCK_FILE)
        self._handle: Optional[IO[str]] = None

    @property
    def held(self) -> bool:
        return self._handle is not None

    def acquire(self) -> "FolderLock":
        """Take the lock and record this process as its holder.

        Raises:
            ConfigError: another run holds the folder (naming its pid, tool and start time).
        """
        if self.held:
            return self
        # "a+" creates the file without truncating it: the holder's record must stay readable to a refused run
        handle = open(self.path, "a+", encoding="utf-8")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = _holder(handle)
            handle.close()
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            raise ConfigError(f"OUTPUT_DIR {self.folder} is in use by another run ({holder}); wait for it to end "
                              "or choose another OUTPUT_DIR") from None
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps({"pid": os.getpid(), "tool": self.tool, "started": time.time()}) + "\n")
        handle.flush()
        self._handle = handle
        return self

    def release(self) -> None:
        """Drop the lock (the file stays: removing it would let a third run lock a different inode)."""
        if self._handle is not None:
            fcntl.flock(self._handle, fcntl.LOCK_UN)
            self._handle.close()
            self._handle = None


def _holder(handle: IO[str]) -> str:
    """'pid 123, train_teacher, started 2025-01-31 12:00:00' from the lock file, as far as it can be read."""
    try:
        handle.seek(0)
        record = json.loads(handle.read() or "{}")
    except (OSError, ValueError):
        record = {}
    if "pid" not in record:
        return "a run that is starting"
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(record.get("started", 0))))
    return f"pid {record['pid']}, {record.get('tool', 'unknown tool')}, started {started}"
