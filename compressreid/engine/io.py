"""Atomic file writes: a crash never leaves a half-written file under the final name, and what is published gets
the permissions the user's umask gives any other new file. And a file's sha256."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from typing import Any, Callable

import torch

from compressreid.errors import ConfigError

# Prefixes of the partial files written next to their final name before the atomic rename (``.export-`` and
# ``.ptq-`` are the ONNX writers'); a killed run can leave one behind, so run folders clear them at start.
TEMP_PREFIXES = (".tmp-", ".export-", ".ptq-")
# file_sha256 of a path that is not a file
MISSING = "missing"
_CHUNK = 1 << 20


def file_sha256(path: str) -> str:
    """sha256 of a file's bytes, read in chunks, or ``"missing"`` when it does not exist."""
    if not os.path.isfile(path):
        return MISSING
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def current_umask() -> int:
    """The process umask, read without changing it where the OS allows.

    ``os.umask`` can only be read by setting it, which for a moment gives other threads (loader threads,
    tensorboard's writer) a wrong umask; Linux reports it in /proc instead.
    """
    try:
        with open("/proc/self/status", "r", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def publish_file(tmp: str, path: str) -> str:
    """Give ``tmp`` the mode a plainly created file would have (0o666 minus the umask), then atomically rename it
    to ``path``.

    ``tempfile.mkstemp`` creates files 0600 so that nobody reads a half-written file; without this a shipped model
    stays unreadable to every other user. The mode is set just before the rename because some writers replace
    the temporary file rather than write into it.
    """
    os.chmod(tmp, 0o666 & ~current_umask())
    os.replace(tmp, path)  # atomic on POSIX within one filesystem
    return path


def ensure_writable_dir(path: str, key: str = "OUTPUT_DIR") -> str:
    """Create ``path`` if needed and check this process may write into it; returns its absolute path.

    Raises:
        ConfigError: it cannot be created (a parent is a regular file, a read-only parent) or is not writable,
            in one line rather than a traceback from the first write.
    """
    path = os.path.abspath(path)
    blocker = _first_non_folder(path)
    if blocker:
        raise ConfigError(f"{key} {path} cannot be created: {blocker} is a file, not a folder")
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as exc:
        where = f" ({exc.filename})" if exc.filename and os.path.abspath(exc.filename) != path else ""
        raise ConfigError(f"{key} {path} cannot be created: {exc.strerror or exc}{where}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise ConfigError(f"{key} {path} is not writable by this user")
    return path


def _first_non_folder(path: str) -> str:
    """``path`` or its nearest existing ancestor when that is not a folder (a regular file), else ""."""
    while not os.path.exists(path):
        parent = os.path.dirname(path)
        if parent == path:
            return ""
        path = parent
    return "" if os.path.isdir(path) else path


def temp_file_beside(path: str, prefix: str = ".tmp-", suffix: str = "") -> str:
    """Create an empty temporary file in ``path``'s folder (same filesystem, so ``publish_file`` is atomic) and
    return its name; the caller writes it, then publishes or removes it."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    handle, tmp = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=directory)
    os.close(handle)
    return tmp


def _atomic_write(path: str, write: Callable[[str], None]) -> str:
    tmp = temp_file_beside(path, suffix=os.path.basename(path))
    try:
        write(tmp)
        publish_file(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path


def atomic_write_text(path: str, text: str) -> str:
    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(text)

    return _atomic_write(path, write)


def atomic_write_json(path: str, data: Any) -> str:
    return atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False, default=_json_default) + "\n")


def atomic_torch_save(path: str, obj: Any) -> str:
    return _atomic_write(path, lambda tmp: torch.save(obj, tmp))


def atomic_copy(src: str, dst: str) -> str:
    """Copy ``src`` to ``dst`` byte for byte, atomically (a reader never sees half a copy)."""
    return _atomic_write(dst, lambda tmp: shutil.copyfile(src, tmp))


def _json_default(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
