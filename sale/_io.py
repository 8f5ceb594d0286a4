"""File writes that lose nothing: whole files replaced atomically, and records appended line by line under a lock."""
from __future__ import annotations

import fcntl
import os
import tempfile


def atomic_write_bytes(path: str, data: bytes) -> None:
    """Replace the file at `path` with `data`: a temporary file in the same folder, fsync, then rename."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file ordinary permissions
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def append_line(path: str, line: str) -> None:
    """Append one line to a text file, safe with concurrent writers and killed ones.

    The file is opened with O_APPEND and held under an exclusive ``flock`` while one ``write`` adds the whole line
    and ``fsync`` makes it durable, so writers in several processes never interleave or lose lines, and an append
    costs the same at any file size (nothing is read or rewritten). If the file's last line was torn (a writer
    killed mid-write, a full disk), the new line starts on a line of its own: readers skip the torn one."""
    data = line.rstrip("\n").encode() + b"\n"
    if b"\n" in data[:-1]:
        raise ValueError("append_line takes one line: the text holds a newline")
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        size = os.fstat(fd).st_size
        if size:
            with open(path, "rb") as f:   # the last byte only
                f.seek(size - 1)
                if f.read(1) != b"\n":
                    data = b"\n" + data
        view = memoryview(data)
        while view:                        # a regular file takes it in one write; loop on a short write anyway
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)                       # closing releases the lock
