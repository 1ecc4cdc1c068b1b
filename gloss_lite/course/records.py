"""Numbers a notebook reports to its checks, stored in the notebook's outputs without being shown.

``record("frozen_lr_accuracy", 0.93)`` stores the value in the cell's output under a MIME type of
its own and nothing else, so the reader sees nothing (JupyterLab and Colab show no output they
have no renderer for, and the course's website drops it): a notebook shows its numbers in its own
words, a table or a figure, and records them for the checks. After papermill has run a notebook,
``read_records(path)`` collects every recorded value, so a test (``python -m gloss_lite.course``,
``tests/test_notebooks.py``) checks the numbers (an accuracy above a floor, a difference below a
tolerance) without reading printed text. Outside a notebook (plain Python, no IPython kernel),
``record`` prints ``name = value``, the only place such a value can go.
"""

from __future__ import annotations

import math
from pathlib import Path

from .notebooks import cells, read_notebook

MIME_TYPE = "application/vnd.gloss-lite.record+json"


def _in_a_kernel() -> bool:
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


def record(name: str, value) -> None:
    """Store ``name = value`` in the notebook's output, unseen (``value``: a number, bool or string)."""
    if hasattr(value, "item"):
        value = value.item()
    if not isinstance(value, (int, float, bool, str)):
        raise ValueError(f"record {name!r}: value must be a number, bool or string, got {type(value).__name__}")
    if isinstance(value, float) and not math.isfinite(value):
        value = str(value)  # JSON has no NaN/Inf; a test reading it fails clearly on the string
    if not _in_a_kernel():
        print(f"{name} = {value:.6g}" if isinstance(value, float) else f"{name} = {value}")
        return
    from IPython.display import display

    display({MIME_TYPE: {name: value}}, raw=True)


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
