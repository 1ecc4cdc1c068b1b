"""Every notebook is committed in the form JupyterLab 4.6 saves, and the package writes that form.

Opening a notebook in JupyterLab and saving it then changes nothing, so ``git status`` stays clean.
``data/saved_by_jupyterlab.ipynb`` is the notebook ``TINY`` below as JupyterLab 4.6.6 saved it
(opened in the browser with the course's kernel, saved with Ctrl+S): the reference for the layout
and for the metadata JupyterLab writes.
Every code line also fits ``LINE_LIMIT`` characters, so a cell reads without scrolling sideways.
"""

import json
from pathlib import Path

import nbformat
import papermill
import pytest

from gloss_lite.course import classroom
from gloss_lite.course.notebooks import write_notebook
from gloss_lite.course.run import declared_parameters

from conftest import ROOT

SAVED_BY_JUPYTERLAB = Path(__file__).parent / "data" / "saved_by_jupyterlab.ipynb"
REFERENCE = json.loads(SAVED_BY_JUPYTERLAB.read_text(encoding="utf-8"))["metadata"]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
LINE_LIMIT = 88  # characters per code line, as in black's and ruff's default

# the notebook before JupyterLab saved it: keys unsorted, integral floats, sources as one string
TINY = {
    "nbformat": 4, "nbformat_minor": 5,
    "metadata": {
        "language_info": {"name": "python"},
        "kernelspec": {"name": "python3", "language": "python", "display_name": "Python 3"},
        "gloss_lite": {"smoke_parameters": {"N": 8, "FRACTION": 0.5},
                       "checks": {"accuracy": {"min": 0.0, "max": 1.0}, "gap": {"max": 1e-06},
                                  "ratio": {"min": 5.0}, "flag": {"equals": True}}},
    },
    "cells": [
        {"cell_type": "markdown", "id": "title", "metadata": {},
         "source": "# A tiny notebook · σ and γ\n\nJupyterLab saves this."},
        {"cell_type": "code", "id": "parameters", "metadata": {"tags": ["parameters"]}, "execution_count": None,
         "outputs": [], "source": ["N = 8\n", "FRACTION = 0.5"]},
        {"cell_type": "code", "id": "work", "metadata": {"gloss_lite": {"role": "check", "exercise": "00.1",
                                                                         "weight": 2.0}},
         "execution_count": None, "outputs": [], "source": "total = N * FRACTION\nprint(total)\n"},
    ],
}


def integral_floats(value, where=""):
    """Places in a JSON value that hold a float with an integral value (JavaScript writes 1.0 as 1)."""
    if isinstance(value, float) and value.is_integer():
        return [f"{where or '/'} = {value!r}"]
    if isinstance(value, dict):
        return [found for key, item in value.items() for found in integral_floats(item, f"{where}/{key}")]
    if isinstance(value, list):
        return [found for i, item in enumerate(value) for found in integral_floats(item, f"{where}[{i}]")]
    return []


def form_problems(text: str) -> list[str]:
    """What JupyterLab would change in this notebook text on saving it (empty when nothing)."""
    problems = []
    if nbformat.writes(nbformat.reads(text, as_version=4)) + "\n" != text:
        problems.append("not in nbformat's layout (sorted keys, one-space indent, lines as lists, final newline)")
    notebook = json.loads(text)
    problems += [f"integral float {found}" for found in integral_floats(notebook)]
    for key in ("kernelspec", "language_info"):
        if notebook["metadata"].get(key) != REFERENCE[key]:
            problems.append(f"metadata.{key} is {notebook['metadata'].get(key)!r}, "
                            f"JupyterLab writes {REFERENCE[key]!r}")
    return problems


def long_code_lines(notebook: dict) -> list[str]:
    """Each code line longer than ``LINE_LIMIT`` characters, as 'cell ID line K: N characters'."""
    found = []
    for cell in notebook["cells"]:
        if cell["cell_type"] != "code":
            continue
        source = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
        for number, line in enumerate(source.split("\n"), start=1):
            if len(line) > LINE_LIMIT:
                found.append(f"cell {cell.get('id')} line {number}: {len(line)} characters")
    return found


def test_the_reference_is_what_jupyterlab_wrote():
    text = SAVED_BY_JUPYTERLAB.read_text(encoding="utf-8")
    assert form_problems(text) == []
    assert REFERENCE["kernelspec"]["display_name"] == "Python 3 (ipykernel)"
    assert json.loads(text)["metadata"]["gloss_lite"]["checks"]["accuracy"] == {"max": 1, "min": 0}
    assert form_problems(json.dumps(TINY, indent=1) + "\n"), "the check must see the differences"


def test_the_course_has_notebooks_to_check():
    assert len(NOTEBOOKS) >= 8 and NOTEBOOKS[0].name.startswith("00_")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_each_notebook_is_in_the_form_jupyterlab_saves(path):
    problems = form_problems(path.read_text(encoding="utf-8"))
    assert not problems, (f"{path.name}: " + "; ".join(problems)
                          + ". Rewrite it with gloss_lite.course.write_notebook(read_notebook(path), path)")


def test_the_line_check_names_the_cell_the_line_and_its_length():
    fits = json.loads(json.dumps(TINY))
    fits["cells"][2]["source"] = "x = 1\n" + "y = " + "1" * (LINE_LIMIT - 4)
    assert long_code_lines(fits) == []
    too_long = json.loads(json.dumps(fits))
    too_long["cells"][2]["source"] += "1"
    too_long["cells"][0]["source"] = "m" * 200  # markdown is wrapped by the browser, not counted
    assert long_code_lines(too_long) == [f"cell work line 2: {LINE_LIMIT + 1} characters"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_code_line_of_each_notebook_fits_the_page(path):
    too_long = long_code_lines(json.loads(path.read_text(encoding="utf-8")))
    assert not too_long, (f"{path.name}: code lines over {LINE_LIMIT} characters: " + "; ".join(too_long)
                          + ". Break them inside brackets, name an intermediate value, or move the comment above")


@pytest.mark.parametrize("path", [p for p in NOTEBOOKS if declared_parameters(p)], ids=lambda p: p.stem)
def test_papermill_reads_every_parameter_a_wrapped_parameters_cell_declares(path):
    # papermill skips a line with two '=' (a comment such as '>= 2'), then warns of an unknown parameter
    unseen = sorted(set(declared_parameters(path)) - set(papermill.inspect_notebook(str(path))))
    assert not unseen, f"{path.name}: papermill does not see {unseen}; keep '=' out of their comments"


def test_the_writer_writes_byte_for_byte_what_jupyterlab_saves(tmp_path):
    target = tmp_path / "tiny.ipynb"
    write_notebook(TINY, target)
    assert target.read_bytes() == SAVED_BY_JUPYTERLAB.read_bytes()
    assert TINY["metadata"]["gloss_lite"]["checks"]["accuracy"] == {"min": 0.0, "max": 1.0}, "input left as it was"


def test_a_notebook_written_by_the_package_is_in_the_form(tmp_path):
    new = json.loads(json.dumps(TINY))
    new["metadata"]["gloss_lite"]["checks"]["speedup"] = {"min": 2.0, "max": 1e3}
    new["metadata"].pop("kernelspec")
    path = tmp_path / "08_the_graph_beyond_one_batch.ipynb"
    write_notebook(new, path)
    assert form_problems(path.read_text(encoding="utf-8")) == []
    assert json.loads(path.read_text(encoding="utf-8"))["metadata"]["gloss_lite"]["checks"]["speedup"] == {
        "max": 1000, "min": 2}


def test_the_student_copies_are_in_the_form(tmp_path):
    for path in classroom.make_student_copies(tmp_path / "student"):
        assert form_problems(path.read_text(encoding="utf-8")) == [], path.name
        assert long_code_lines(json.loads(path.read_text(encoding="utf-8"))) == [], path.name


def test_the_writer_refuses_what_is_not_a_notebook(tmp_path):
    with pytest.raises(ValueError, match="not an nbformat 4 notebook"):
        write_notebook({"cells": [], "metadata": {}}, tmp_path / "x.ipynb")
    broken = {**TINY, "cells": [{"cell_type": "code", "id": "a", "metadata": {}, "source": "x = 1"}]}
    with pytest.raises(ValueError, match="a cell lacks the field 'outputs'"):
        write_notebook(broken, tmp_path / "x.ipynb")
    assert not (tmp_path / "x.ipynb").exists()
