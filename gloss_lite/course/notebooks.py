"""Reading and writing the course's notebooks, and what their cells say about themselves.

One reader (``read_notebook``), one writer (``write_notebook``, in the form JupyterLab saves),
and the markers and metadata every course tool reads: solutions between ``BEGIN`` and ``END``,
student code between ``STUDENT_BEGIN`` and ``STUDENT_END``, an exercise cell's role, the model
answers' tag. The readers of a cell (``cells``, ``cell_metadata``, ``cell_tags``,
``cell_source``) take whatever a hand-edited or broken notebook holds (metadata that is a list,
tags that are a number) and read it as empty rather than fail.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from ..files import write_atomically

BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"
STUDENT_BEGIN, STUDENT_END = "### YOUR CODE BELOW", "### YOUR CODE ABOVE"
MODEL_ANSWER_TAG = "model-answers"


ROLES = ("solution", "check")


class NotebookError(ValueError):
    """A file that is not a readable notebook; the message names the file and what is wrong."""


def read_notebook(path: Path) -> dict:
    """The notebook at ``path`` as a dict; ``NotebookError`` naming the path if it is not one."""
    path = Path(path)
    if not path.is_file():
        raise NotebookError(f"{path}: no such notebook" if not path.exists() else f"{path}: not a notebook file")
    try:
        notebook = json.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise NotebookError(f"{path}: cannot be read ({error.strerror or error})") from None
    except UnicodeDecodeError:
        raise NotebookError(f"{path}: not notebook JSON (not UTF-8 text)") from None
    except json.JSONDecodeError as error:
        raise NotebookError(f"{path}: not notebook JSON ({error})") from None
    if not isinstance(notebook, dict) or not isinstance(notebook.get("cells"), list):
        raise NotebookError(f"{path}: not a notebook (no list of cells)")
    return notebook


def cells(notebook: dict) -> list[dict]:
    """The notebook's cells that are dicts (a hand-edited file may hold anything)."""
    found = notebook.get("cells") if isinstance(notebook, dict) else None
    return [cell for cell in found if isinstance(cell, dict)] if isinstance(found, list) else []


def cell_metadata(cell: dict) -> dict:
    metadata = cell.get("metadata")
    return metadata if isinstance(metadata, dict) else {}


def cell_tags(cell: dict) -> list[str]:
    tags = cell_metadata(cell).get("tags")
    return [tag for tag in tags if isinstance(tag, str)] if isinstance(tags, list) else []


# What JupyterLab 4.6 writes into a notebook's metadata when it saves it with the course's kernel
# (the ipykernel "python3" kernel of the course's environment, Python 3.11 as in environment.yml).
# ``version`` is the kernel's Python: a notebook saved under another Python (Colab's, say) changes
# that one line, and only that one.
KERNELSPEC = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}


LANGUAGE_INFO = {
    "codemirror_mode": {"name": "ipython", "version": 3},
    "file_extension": ".py",
    "mimetype": "text/x-python",
    "name": "python",
    "nbconvert_exporter": "python",
    "pygments_lexer": "ipython3",
    "version": "3.11.7",
}


def _as_javascript_numbers(value):
    """``value`` with every integral float (``1.0``) as an int, as a JavaScript frontend sends it back."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {key: _as_javascript_numbers(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_as_javascript_numbers(item) for item in value]
    return value


def notebook_text(notebook: dict) -> str:
    """The text of ``notebook`` exactly as JupyterLab 4.6 saves it, so that opening and saving it there
    changes nothing.

    JupyterLab's frontend sends the notebook to the Jupyter server as JSON, so an integral float
    (``1.0``) arrives as ``1``; it sets the metadata's ``kernelspec`` and ``language_info`` from the
    kernel (``KERNELSPEC``, ``LANGUAGE_INFO``); the server writes it with ``nbformat.writes`` (keys
    sorted, one-space indent, multi-line strings as lists of lines, UTF-8 unescaped) and a final
    newline. This function does the same.
    """
    import nbformat

    if not isinstance(notebook, dict) or notebook.get("nbformat") != 4 or not isinstance(notebook.get("cells"), list):
        raise ValueError("not an nbformat 4 notebook (a dict with 'nbformat': 4 and a list of 'cells'); "
                         "read it with read_notebook or build it with nbformat.v4.new_notebook()")
    data = _as_javascript_numbers(notebook)  # a copy: the dicts and lists are new
    data["metadata"] = {**data.get("metadata", {}), "kernelspec": _as_javascript_numbers(KERNELSPEC),
                        "language_info": _as_javascript_numbers(LANGUAGE_INFO)}
    try:
        return nbformat.writes(nbformat.from_dict(data), version=nbformat.NO_CONVERT) + "\n"
    except (AttributeError, KeyError) as error:  # a cell without a field nbformat needs ("outputs", ...)
        raise ValueError(f"not an nbformat 4 notebook: a cell lacks the field {error.args[0]!r}") from None


def write_notebook(notebook: dict, path: Path) -> None:
    """Write ``notebook`` to ``path`` in the form JupyterLab 4.6 saves (``notebook_text``), atomically."""
    write_atomically(path, notebook_text(notebook).encode("utf-8"))


def source_lines(text: str) -> list[str]:
    lines = text.split("\n")
    return [line + "\n" for line in lines[:-1]] + ([lines[-1]] if lines[-1] else [])


def cell_source(cell: dict) -> str:
    source = cell.get("source", "")
    if isinstance(source, list):
        return "".join(line for line in source if isinstance(line, str))
    return source if isinstance(source, str) else ""


def solution_frame(source: str) -> str | None:
    """A student cell without what lies between its ``STUDENT_BEGIN`` and ``STUDENT_END`` lines (the
    lines the student may not change), without blank lines and trailing spaces, or None when the two
    lines are missing or out of order."""
    kept, inside, blocks = [], False, 0
    for line in source.split("\n"):
        marker = line.strip()
        if marker == STUDENT_BEGIN:
            if inside:
                return None
            inside, blocks = True, blocks + 1
            kept.append(line.rstrip())
        elif marker == STUDENT_END:
            if not inside:
                return None
            inside = False
            kept.append(line.rstrip())
        elif not inside and line.strip():  # a blank line outside the markers changes nothing
            kept.append(line.rstrip())
    if inside or not blocks:
        return None
    return "\n".join(kept).strip("\n")


def frame_digest(source: str) -> str | None:
    frame = solution_frame(source)
    return None if frame is None else hashlib.sha256(frame.encode("utf-8")).hexdigest()[:16]


def exercise_role(cell: dict) -> tuple[str, str] | None:
    """``(exercise id, "solution" | "check")`` from a cell's metadata, or None."""
    meta = cell_metadata(cell).get("gloss_lite")
    if isinstance(meta, dict) and isinstance(meta.get("exercise"), str) and meta.get("role") in ROLES:
        return meta["exercise"], meta["role"]
    return None


def is_model_answer(cell: dict) -> bool:
    return MODEL_ANSWER_TAG in cell_tags(cell)

