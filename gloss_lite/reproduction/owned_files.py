"""Results files that a command owns: refused if someone else's, appended and rewritten atomically.

Used by ``gloss_lite.reproduction.frozen``. A CSV is the command's when its header is the
command's columns; a Markdown summary when it starts with ``SUMMARY_TITLE``. Every write goes to a
temporary file in the same folder, renamed over the target, so a killed command leaves either
the old file or the new one, never half of one.
"""

from __future__ import annotations

import csv
import io
import os
import tempfile
from pathlib import Path

import pandas as pd

SUMMARY_TITLE = "# Frozen features:"


def write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8", newline="") as stream:
            stream.write(text)
        os.chmod(temporary, 0o644)  # mkstemp's 0o600 would hide a results file from other readers
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def check_owned(path: Path, columns: list[str] | None = None) -> None:
    """Raise ``ValueError`` when ``path`` exists and was not written by this command.

    A ``.csv`` must have ``columns`` as its header (any header of this command's when ``columns`` is
    None: it must at least be a CSV whose first line names ``dataset``); a ``.md`` must start with
    ``SUMMARY_TITLE``.
    """
    if not path.exists():
        return
    if path.is_dir():
        raise ValueError(f"{path} is a folder; give a file name")
    first = path.read_text(encoding="utf-8", errors="replace").split("\n", 1)[0].strip()
    if path.suffix == ".md":
        owned = first.startswith(SUMMARY_TITLE)
    else:
        owned = first.split(",") == columns if columns is not None else first.startswith("dataset,")
    if not owned:
        raise ValueError(f"{path} exists and was not written by this command (its first line is {first[:60]!r}); "
                         "move it away or give another --output")


def finished_keys(path: Path, key: list[str]) -> set[tuple]:
    """The ``key`` values of the rows already in ``path`` (empty when there is no file)."""
    if not path.exists():
        return set()
    return set(pd.read_csv(path)[key].itertuples(index=False, name=None))


def append_rows(path: Path, columns: list[str], rows: list[dict]) -> None:
    """``path`` with ``rows`` added (the header first for a new file), rewritten atomically."""
    check_owned(path, columns)
    old = path.read_text(encoding="utf-8") if path.exists() else ""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    if not old:
        writer.writeheader()
    writer.writerows(rows)
    write_text(path, old + buffer.getvalue())
