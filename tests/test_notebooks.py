"""Every course notebook: committed clean, and executed end to end by papermill with smoke parameters.

A notebook declares its smoke parameters and the recorded numbers to check in its metadata
(see ``gloss_lite.course``); a new notebook in ``notebooks/`` is picked up here without edits.
"""

import ast
import json

import pytest

from gloss_lite.course.records import read_records
from gloss_lite.course.run import check_records, course_metadata, notebook_paths

NOTEBOOKS = notebook_paths()


def test_the_course_has_notebooks():
    assert NOTEBOOKS, "no notebooks/NN_*.ipynb found"
    assert NOTEBOOKS[0].name.startswith("00_")


def parameter_names(cell_source: str) -> set[str]:
    """Names assigned in a parameters cell; fails unless every value is a plain literal."""
    names = set()
    for node in ast.parse(cell_source).body:
        assert isinstance(node, ast.Assign) and len(node.targets) == 1, ast.unparse(node)
        assert isinstance(node.targets[0], ast.Name), ast.unparse(node)
        ast.literal_eval(node.value)  # raises on anything but a literal
        names.add(node.targets[0].id)
    return names


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_committed_clean_with_one_parameters_cell(path):
    notebook = json.loads(path.read_text(encoding="utf-8"))
    code_cells = [c for c in notebook["cells"] if c["cell_type"] == "code"]
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in code_cells), (
        f"{path.name} has outputs; clear them before committing"
    )
    tagged = [c for c in notebook["cells"] if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1, f"{path.name} needs exactly one cell tagged 'parameters'"
    names = parameter_names("".join(tagged[0]["source"]))
    meta = course_metadata(path)
    assert set(meta.get("smoke_parameters", {})) <= names, "smoke parameters must be declared parameters"
    assert meta.get("checks"), f"{path.name} declares no checks in metadata.gloss_lite.checks"
    code = "\n".join("".join(c["source"]) for c in code_cells if c is not tagged[0])
    read = {node.id for node in ast.walk(ast.parse(_without_magics(code))) if isinstance(node, ast.Name)}
    unread = sorted(names - read)
    assert not unread, f"{path.name}: the parameters {unread} are declared but no code cell reads them"


def _without_magics(code: str) -> str:
    """Notebook code as plain Python: IPython's ``%`` and ``!`` lines become blank."""
    return "\n".join("" if line.lstrip().startswith(("%", "!")) else line for line in code.splitlines())


@pytest.mark.notebook
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_with_smoke_parameters(path, executed_notebook):
    meta = course_metadata(path)
    executed = executed_notebook(path)  # run once per session, shared with tests/test_site.py
    failures = check_records(read_records(executed), meta["checks"])
    assert not failures, f"{path.name}: " + "; ".join(failures)


def test_check_records_reports_each_kind_of_failure():
    records = {"accuracy": 0.4, "gap": 1e-3, "status": "ok"}
    checks = {
        "accuracy": {"min": 0.5},
        "gap": {"max": 1e-6},
        "status": {"equals": "done"},
        "missing": {"min": 0},
    }
    failures = check_records(records, checks)
    assert len(failures) == 4
    assert failures[0] == "accuracy = 0.4, expected >= 0.5"
    assert check_records(records, {"accuracy": {"min": 0.3, "max": 0.5}}) == []
    assert check_records({"loss": "nan"}, {"loss": {"max": 10}}) == ["loss = 'nan', expected <= 10"]
