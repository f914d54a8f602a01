"""Crash-safe writes: a file is written under a temporary name beside it, flushed, fsync'ed and
moved into place with `os.replace` (atomic on POSIX), so a reader never sees half a file and a
failed write leaves the previous file (or none) in place."""

import contextlib
import os
import tempfile


def atomic_write(path, data):
    """Writes `data` to `path` via a temporary sibling (``.<name>.<random>.tmp``) and `os.replace`.

    The file gets the usual mode (``0o666`` minus the umask), not `tempfile`'s ``0o600``. Missing
    parent directories are created.

    Args:
        path: the destination (str or path-like).
        data: ``bytes``, or ``str`` (written as UTF-8).

    Raises:
        TypeError: `data` is neither bytes nor str.
        OSError: the directory cannot be written; the temporary file is removed.

    Example:
        >>> atomic_write("front.json", '{"points": []}')  # doctest: +SKIP
    """
    if isinstance(data, str):
        data = data.encode("utf-8")
    if not isinstance(data, (bytes, bytearray)):
        raise TypeError("Invalid value for argument `data`: expected bytes or str. "
                        f"Received: data of type {type(data).__name__}")
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
