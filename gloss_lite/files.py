"""Writing a file atomically: a reader sees the old file or the new one, never half of one.

Every tool of the course writes this way (notebooks, results files, plans, checkpoints, feature
caches, the grader's records, the website): the bytes go to a temporary file in the target's own
folder, are flushed to disk, and the temporary file is renamed over the target. A rename within
one folder is atomic on POSIX file systems, so an interrupted write or a full disk leaves the
previous file as it was, and the temporary file is removed.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

__all__ = ["UMASK", "replace_atomically", "write_atomically"]

UMASK = os.umask(0o022)  # read once, at import: the process's file-creation mask
os.umask(UMASK)


def replace_atomically(path: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(temporary)`` on a new file beside ``path``, then rename it to ``path``.

    The temporary file gets the permissions ``open()`` would give a new file (``0o666`` less the
    umask; ``mkstemp`` alone makes it private). On any error, ``path`` is unchanged and the
    temporary file is gone.
    """
    path = Path(path)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial")
    os.close(handle)
    try:
        os.chmod(temporary, 0o666 & ~UMASK)
        write(Path(temporary))
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def write_atomically(path: Path, data: bytes | str) -> None:
    """Write ``data`` (text is written as UTF-8, line ends as given) to ``path`` atomically."""
    if isinstance(data, str):
        data = data.encode("utf-8")

    def write(temporary: Path) -> None:
        with open(temporary, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())

    replace_atomically(path, write)
