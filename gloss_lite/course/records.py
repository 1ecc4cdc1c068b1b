"""Numbers a notebook reports, for its readers and for the tests that execute it.

``record("frozen_lr_accuracy", 0.93)`` shows the value in the notebook and stores it in the
cell's output under a MIME type of its own. After papermill has run a notebook,
``read_records(path)`` collects every recorded value, so a test can check numbers (an accuracy
above a floor, a difference below a tolerance) without comparing printed text.
"""

from __future__ import annotations

import math
from pathlib import Path

from .notebooks import cells, read_notebook

MIME_TYPE = "application/vnd.gloss-lite.record+json"


def record(name: str, value) -> None:
    """Show ``name = value`` and store it in the notebook's output (``value``: a number, bool or string)."""
    if hasattr(value, "item"):
        value = value.item()
    if not isinstance(value, (int, float, bool, str)):
        raise ValueError(f"record {name!r}: value must be a number, bool or string, got {type(value).__name__}")
    if isinstance(value, float) and not math.isfinite(value):
        value = str(value)  # JSON has no NaN/Inf; a test reading it fails clearly on the string
    text = f"{name} = {value:.6g}" if isinstance(value, float) else f"{name} = {value}"
    try:
        from IPython.display import display
    except ImportError:  # plain Python: just print
        print(text)
        return
    display({MIME_TYPE: {name: value}, "text/plain": text}, raw=True)


def read_records(notebook: str | Path | dict) -> dict:
    """All values recorded in an executed notebook (a path or a loaded notebook dict), by name."""
    if not isinstance(notebook, dict):
        notebook = read_notebook(Path(notebook))
    found = {}
    for cell in cells(notebook):
        outputs = cell.get("outputs")
        for output in outputs if isinstance(outputs, list) else []:
            data = output.get("data") if isinstance(output, dict) else None
            values = data.get(MIME_TYPE) if isinstance(data, dict) else None
            found.update(values if isinstance(values, dict) else {})
    return found
