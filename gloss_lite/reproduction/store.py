"""Writing the grid's files safely: rows under the file's own header, atomic rewrites, claims on runs.

Used by ``gloss_lite.reproduction.run``; taught with it in ``notebooks/07_reproducing_the_paper.ipynb``.

- ``append_rows`` adds rows to a CSV under the header the file already has (another column
  order, other spellings, extra columns: each value lands under its own name; a column the
  file lacks is added), and rewrites the file through a temporary file and a rename, so a
  full disk or a kill leaves the old file or the new one, never half a row.
- ``repair_cut_row`` drops a last line that an older writer left cut short (no line end, too
  few values), so that a resumed grid can read and extend the file; the run it belonged to is
  not finished and runs again.
- ``check_writable`` fails before any training when a folder is read-only or nearly full.
- ``RunClaims``: two invocations on one results file share its runs instead of training each
  twice. A run is claimed by an exclusive ``flock`` on one lock file per run key, in a folder
  beside the results file (removed when the grid ends). The kernel releases a lock when its
  process ends, so a lock file left by a killed invocation (a stale claim) is simply taken over.
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
import shutil
import tempfile
import types
from pathlib import Path

from ..files import write_atomically

__all__ = [
    "append_rows",
    "check_writable",
    "claims_folder",
    "file_lock",
    "GridError",
    "repair_cut_row",
    "RunClaims",
]

fcntl: types.ModuleType | None
try:
    import fcntl
except ImportError:  # not a POSIX system: runs are not claimed (two invocations may train one run twice)
    fcntl = None


class GridError(ValueError):
    """A results file, folder or setting that the grid refuses before it trains anything."""


def claims_folder(output: Path) -> Path:
    """Where the claims on the runs of ``output`` live: ``.<name>.claims/`` beside it."""
    return output.parent / f".{output.name}.claims"


def _rows_of(path: Path) -> tuple[list[str], list[list[str]], bool]:
    """The header, the rows and whether the last line was cut short (no line end, too few values)."""
    if not path.exists() or path.stat().st_size == 0:
        return [], [], False
    text = path.read_text(encoding="utf-8-sig")
    rows = [row for row in csv.reader(io.StringIO(text)) if any(cell.strip() for cell in row)]
    if not rows:
        return [], [], False
    header, body = rows[0], rows[1:]
    cut = bool(body) and not text.endswith(("\n", "\r")) and len(body[-1]) < len(header)
    return header, body[:-1] if cut else body, cut


def repair_cut_row(path: Path) -> bool:
    """Drop a last line cut short (see the module docstring); True if one was dropped."""
    with file_lock(path):
        header, body, cut = _rows_of(path)
        if cut:
            _write_rows(path, header, body)
            print(f"{path}: the last line was cut short (a full disk or a killed write); it was dropped and its "
                  "run will run again", flush=True)
        return cut


def append_rows(path: Path, rows: list[dict], columns: list[str]) -> None:
    """Add ``rows`` (dicts keyed by ``columns``) to the CSV at ``path``, each value under its own column.

    The file keeps its header (names matched without case and surrounding spaces); columns it
    lacks are added at its end. A new file gets ``columns`` as its header.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(path):
        header, body, _ = _rows_of(path)
        header = header or list(columns)
        names = {name.strip().lower(): position for position, name in enumerate(header)}
        header = header + [column for column in columns if column.lower() not in names]
        names = {name.strip().lower(): position for position, name in enumerate(header)}
        body = [row + [""] * (len(header) - len(row)) for row in body]
        for row in rows:
            unknown = sorted(set(row) - set(columns))
            if unknown:
                raise ValueError(f"rows for {path} hold the unknown column(s) {unknown}; its columns are {columns}")
            line = [""] * len(header)
            for column, value in row.items():
                line[names[column.lower()]] = "" if value is None else str(value)
            body.append(line)
        _write_rows(path, header, body)


def _write_rows(path: Path, header: list[str], body: list[list[str]]) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(body)
    write_atomically(path, buffer.getvalue())


@contextlib.contextmanager
def file_lock(path: Path):
    """Hold an exclusive lock on ``path`` itself while rewriting it (other writers wait), where the
    system has ``flock``; creates an empty ``path`` if there is none."""
    handle = _locked(path, wait=True)
    try:
        yield
    finally:
        handle.close()  # closing releases the lock


def _locked(lock: Path, *, wait: bool):
    """An open handle holding an exclusive ``flock`` on ``lock``, or None if another holds it (``wait=False``).

    After locking, the handle must still be the file at ``lock``: the holder before may have
    deleted or replaced it in between, and a lock on a file no longer there guards nothing, so
    then it tries again.
    """
    if fcntl is None:
        return open(lock, "a")
    while True:
        handle = open(lock, "a")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            handle.close()
            return None
        try:
            if os.stat(lock).st_ino == os.fstat(handle.fileno()).st_ino:
                return handle
        except FileNotFoundError:
            pass
        handle.close()


class RunClaims:
    """Claims on the runs of one results file; ``claim(key)`` is False when another process holds it."""

    def __init__(self, output: Path):
        self.folder = claims_folder(output)
        self.held: dict[tuple, io.TextIOWrapper] = {}  # a claimed run's key -> its locked handle

    def _lock_path(self, key: tuple) -> Path:
        return self.folder / ("__".join(str(part) for part in key).replace("/", "_") + ".lock")

    def claim(self, key: tuple) -> bool:
        self.folder.mkdir(parents=True, exist_ok=True)
        handle = _locked(self._lock_path(key), wait=False)
        if handle is None:
            return False
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        self.held[key] = handle
        return True

    def release(self, key: tuple) -> None:
        handle = self.held.pop(key, None)
        if handle is not None:
            self._lock_path(key).unlink(missing_ok=True)  # still locked: nobody else holds this file
            handle.close()

    def close(self) -> None:
        """Release every claim; remove the folder when no other invocation uses it."""
        for key in list(self.held):
            self.release(key)
        with contextlib.suppress(OSError):
            self.folder.rmdir()  # fails while another invocation holds a claim: it removes it later


def check_writable(folder: Path, need_mb: float, what: str) -> None:
    """``GridError`` unless ``folder`` can be created, written and has ``need_mb`` free (checked now,
    before any run trains)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        if not folder.is_dir():
            raise NotADirectoryError(f"{folder} is not a folder")
        handle, probe = tempfile.mkstemp(dir=folder, prefix=".write-check.")
        try:
            os.write(handle, b"x")
            os.fsync(handle)
        finally:
            os.close(handle)
            os.unlink(probe)
    except OSError as error:
        raise GridError(f"cannot write {what} in {folder} ({error.strerror or error}); give a writable folder "
                        "before any run trains") from None
    free = shutil.disk_usage(folder).free / 2**20
    if free < need_mb:
        raise GridError(f"{folder} has {free:.0f} MB free, and {what} need about {need_mb:.0f} MB; "
                        "free some space or give another folder")
