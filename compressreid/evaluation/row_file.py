"""Float32 gallery rows kept in a file: appended chunk by chunk, read back block by block into one buffer.

A compressed gallery re-scores its candidates exactly, so the FP32 rows must stay reachable, but holding them
resident would cost what compression saves. Reads go through ``readinto`` (not a memory map): the OS page cache
may keep the file, and that memory is not the process's RSS and is given back under pressure; without spare RAM
the reads come from disk, one sequential pass per search.
"""

from __future__ import annotations

import os
import tempfile
from typing import Iterator, Optional, Tuple

import numpy as np

from compressreid.errors import DataError


class Float32RowFile:
    """``(num_rows, dim)`` float32 rows in an anonymous temporary file, freed by :meth:`close` (or the ``with``
    block). On POSIX the file has no name from the start (``tempfile.TemporaryFile``), so a process that dies
    (killed, out of memory) leaves nothing on disk: a million 512-d rows are 2 GB."""

    def __init__(self, dim: int, directory: Optional[str] = None):
        self._file = tempfile.TemporaryFile(mode="w+b", prefix="gallery_", suffix=".f32", dir=directory)
        self.dim = dim
        self.num_rows = 0

    def append(self, rows: np.ndarray) -> None:
        """Write ``rows`` (float32, ``(n, dim)``) after the rows already stored."""
        if rows.dtype != np.float32 or rows.ndim != 2 or rows.shape[1] != self.dim:
            raise DataError(f"rows must be float32 (n, {self.dim}), got {rows.dtype} {rows.shape}")
        self._file.seek(0, os.SEEK_END)
        self._file.write(memoryview(np.ascontiguousarray(rows)).cast("B"))
        self.num_rows += len(rows)

    def blocks(self, block_rows: int) -> Iterator[Tuple[int, np.ndarray]]:
        """``(first_row, rows)`` over the whole file in order; ``rows`` is one buffer, overwritten by the next block."""
        self._file.flush()
        self._file.seek(0)
        buf = np.empty((min(block_rows, max(self.num_rows, 1)), self.dim), dtype=np.float32)
        for start in range(0, self.num_rows, block_rows):
            rows = buf[: min(block_rows, self.num_rows - start)]
            view = memoryview(rows).cast("B")
            if self._file.readinto(view) != view.nbytes:
                raise DataError(f"gallery row file: ended before row {start + len(rows)} of {self.num_rows}")
            yield start, rows

    def close(self) -> None:
        self._file.close()  # the file is gone with its last descriptor

    def __enter__(self) -> "Float32RowFile":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
