"""Crash-safe file and directory writes.

Single files are written to a temporary name in the same directory, flushed,
fsync'ed and moved into place with `os.replace` (atomic on POSIX).

A whole export directory is built inside a hidden temporary *sibling* of the
target (`.<name>.tmp-XXXX`) and renamed into place only once every file has
been written. If anything fails before that, the temporary directory is
removed and the target is left exactly as it was (absent, or the previous
export when `overwrite=True`).
"""

import contextlib
import os
import shutil
import tempfile
from pathlib import Path

from tips_keras.atomic import atomic_write


def atomic_write_bytes(path, data):
    """Write `data` to `path` via a temporary name + `os.replace` (`tips_keras.atomic`)."""
    atomic_write(path, bytes(data))


def atomic_write_text(path, text):
    atomic_write(path, text)


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def check_output_dir(out_dir, overwrite):
    """Fail early if `out_dir` cannot be (re)written.

    An absent or empty directory is fine; an existing non-empty directory
    needs `overwrite=True`; an existing *file* is always an error.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() or out_dir.is_symlink():
        if not out_dir.is_dir():
            raise FileExistsError(
                f"Output path {str(out_dir)!r} exists and is not a directory."
            )
        if any(out_dir.iterdir()) and not overwrite:
            raise FileExistsError(
                f"Output directory {str(out_dir)!r} already exists and is not "
                "empty. Pass `overwrite=True` (CLI: --overwrite) to replace it."
            )


@contextlib.contextmanager
def atomic_directory(out_dir, overwrite=False):
    """Context manager yielding a temporary directory that replaces `out_dir`
    when the block exits without an exception.

    ```python
    with atomic_directory("out/b050", overwrite=True) as tmp:
        (tmp / "model.tflite").write_bytes(data)
    # out/b050 now holds model.tflite, or nothing changed if the block raised
    ```
    """
    out_dir = Path(out_dir)
    check_output_dir(out_dir, overwrite)
    parent = out_dir.parent
    parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=parent))
    try:
        os.chmod(tmp, 0o777 & ~_umask())
        yield tmp
        _commit(tmp, out_dir, overwrite)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _commit(tmp, out_dir, overwrite):
    # Re-check: another process may have created the target meanwhile.
    check_output_dir(out_dir, overwrite)
    backup = None
    if out_dir.is_dir():
        if any(out_dir.iterdir()):
            backup = Path(
                tempfile.mkdtemp(prefix=f".{out_dir.name}.old-", dir=out_dir.parent)
            )
            os.rmdir(backup)
            os.rename(out_dir, backup)
        else:
            os.rmdir(out_dir)
    try:
        os.rename(tmp, out_dir)
    except BaseException:
        if backup is not None:
            os.rename(backup, out_dir)  # put the previous export back
        raise
    if backup is not None:
        shutil.rmtree(backup, ignore_errors=True)
