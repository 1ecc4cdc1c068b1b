"""gloss_lite.course.grading: generated submissions of notebook 01 graded to the expected table.

Each submission is the student copy of notebook 01 with its solutions filled in from the
instructor's notebook, then changed the way a student might: a wrong answer, one that raises, one
that never returns, one that calls the reference, a deleted check cell, a duplicated cell, one that
writes outside its folder, one edited outside its markers. Two exercises are graded, with a small
time limit, to keep the test quick.
"""

import csv
import json
import re
import subprocess
import sys

import pytest

from gloss_lite.course import classroom, grading
from gloss_lite.course.run import NOTEBOOK_DIR

INSTRUCTOR = classroom.read_notebook(next(NOTEBOOK_DIR.glob("01_*.ipynb")))
GRADED = ["01.1", "01.2"]


def solution_body(exercise_id):
    (cell,) = [c for c in INSTRUCTOR["cells"] if classroom.exercise_role(c) == (exercise_id, "solution")]
    inside = classroom.cell_source(cell).split(classroom.BEGIN)[1].split(classroom.END)[0]
    return inside.split("\n", 1)[1].rsplit("\n", 1)[0]  # the lines between the two markers


def fill(source, body):
    """Put ``body`` between the student markers of a stub cell, in place of the stub."""
    head, rest = source.split(classroom.STUDENT_BEGIN + "\n", 1)
    _, tail = rest.split(classroom.STUDENT_END, 1)
    indent = re.search(r"([ \t]*)$", head).group(1)
    return f"{head}{classroom.STUDENT_BEGIN}\n{body}\n{indent}{classroom.STUDENT_END}{tail}"


def cell_of(notebook, exercise_id, role):
    return next(c for c in notebook["cells"] if classroom.exercise_role(c) == (exercise_id, role))


def submission(change=None, body_12=None):
    notebook = classroom.student_notebook(INSTRUCTOR, name="01")
    for exercise_id in GRADED:
        cell = cell_of(notebook, exercise_id, "solution")
        body = body_12 if (exercise_id == "01.2" and body_12) else solution_body(exercise_id)
        cell["source"] = classroom.source_lines(fill(classroom.cell_source(cell), body))
    if change:
        change(notebook)
    return notebook


def delete_check(notebook):
    notebook["cells"].remove(cell_of(notebook, "01.2", "check"))


def duplicate_solution(notebook):
    cell = cell_of(notebook, "01.2", "solution")
    index = notebook["cells"].index(cell)
    wrong = json.loads(json.dumps(cell))  # an earlier, wrong try left above the right one
    wrong["source"] = classroom.source_lines(fill(classroom.cell_source(cell), "    return embeddings"))
    notebook["cells"].insert(index, wrong)


def rename_argument(notebook):
    cell = cell_of(notebook, "01.2", "solution")
    cell["source"] = classroom.source_lines(classroom.cell_source(cell).replace("(embeddings, sigma)", "(x, s)", 1))


def student_id_parameter(notebook):
    cell = next(c for c in notebook["cells"] if "parameters" in c["metadata"].get("tags", []))
    cell["source"] = classroom.source_lines(classroom.cell_source(cell) + '\nSTUDENT_ID = "alice"')


CORRECT_12 = solution_body("01.2")
SUBMISSIONS = {
    "submission-7": submission(student_id_parameter),  # all correct; named by its STUDENT_ID
    "bob": submission(body_12="    return torch.exp(-pairwise_squared_distances(embeddings) / (2 * sigma**2))"),
    "carol": submission(body_12="    raise ValueError('sigma must be a tensor')"),
    "dave": submission(body_12="    while True:\n        pass"),
    "erin": submission(body_12="    from gloss_lite.graph import gaussian_affinity as kernel\n"
                               "    return kernel(embeddings, sigma)"),
    "frank": submission(delete_check),
    "grace": submission(duplicate_solution),
    "heidi": submission(body_12="    import pathlib\n"
                                "    pathlib.Path('..', 'escaped.txt').write_text('written outside')\n"
                                "    pathlib.Path('grades.csv').write_text('forged')\n" + CORRECT_12),
    "ivan": submission(rename_argument),
}
EXPECTED = {  # student: (01.1, 01.2, total, the verdict of 01.2)
    "alice": (2, 2, 4, "passed"),
    "bob": (2, 0, 2, "not yet"),
    "carol": (2, 0, 2, "not yet"),
    "dave": (2, 0, 2, "time limit"),
    "erin": (2, 0, 2, "uses the reference implementation"),
    "frank": (2, 0, 2, "check cell missing"),
    "grace": (2, 2, 4, "passed"),
    "heidi": (2, 2, 4, "passed"),
    "ivan": (2, 0, 2, "solution cell edited outside its markers"),
}


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    root = tmp_path_factory.mktemp("class")
    folder = root / "submissions"
    folder.mkdir()
    for name, notebook in SUBMISSIONS.items():
        classroom.write_notebook(notebook, folder / f"{name}.ipynb")
    before = {path.name: path.read_bytes() for path in folder.iterdir()}
    course_before = {path.name: path.read_bytes() for path in NOTEBOOK_DIR.iterdir()}
    lines = []
    results = grading.grade([folder], root / "grades", seed=20251, exercise_ids=GRADED, exercise_timeout=2,
                            notebook_timeout=120, log=lines.append)
    return root, folder, results, lines, before, course_before


def test_the_class_is_graded_to_the_expected_table(graded):
    root, _, results, lines, _, _ = graded
    with open(root / "grades" / "grades.csv", newline="") as handle:
        rows = list(csv.reader(handle))
    print("\n".join(",".join(row) for row in rows))
    assert rows[0] == ["student", "01.1", "01.2", "total"]
    assert {row[0]: tuple(float(x) for x in row[1:]) for row in rows[1:]} == \
        {student: expected[:3] for student, expected in EXPECTED.items()}
    for student, expected in EXPECTED.items():
        (notebook,) = results[student]
        assert {v.exercise: v.status for v in notebook.verdicts} == {"01.1": "passed", "01.2": expected[3]}
    assert len([line for line in lines if re.match(r"\[\d/9\] \w+ \(", line)]) == 9
    assert any(line.startswith("\n9 students graded") for line in lines)


def test_feedback_says_what_went_wrong_and_gives_the_hint(graded):
    root = graded[0]
    feedback = {path.stem: path.read_text() for path in (root / "grades" / "feedback").glob("*.md")}
    assert sorted(feedback) == sorted(EXPECTED)
    assert "## Exercise 01.2 · the Gaussian kernel: 0 / 2" in feedback["bob"]
    assert "largest difference" in feedback["bob"] and "Hint: W_ij = exp(" in feedback["bob"]
    assert "your function raised ValueError: sigma must be a tensor" in feedback["carol"]
    assert "did not finish within 2 s" in feedback["dave"]
    assert "calls gaussian_affinity" in feedback["erin"]
    assert "check('01.2', gaussian_kernel) was deleted" in feedback["frank"]
    assert "the solution cell appears 2 times; the last one was graded" in feedback["grace"]
    assert "YOUR CODE BELOW" in feedback["ivan"]
    assert "Seed" not in feedback["bob"] and "seed=" not in feedback["bob"], "the grading seed stays private"


def test_a_submission_cannot_write_over_the_grader_the_course_or_the_class(graded):
    root, folder, _, _, before, course_before = graded
    assert not (root / "escaped.txt").exists() and not (folder / "escaped.txt").exists()
    assert {path.name: path.read_bytes() for path in folder.iterdir()} == before
    assert {path.name: path.read_bytes() for path in NOTEBOOK_DIR.iterdir()} == course_before
    assert (root / "grades" / "grades.csv").read_text().startswith("student,")


def test_the_grader_writes_only_into_a_folder_of_its_own(graded, tmp_path):
    folder = graded[1]
    with pytest.raises(ValueError, match="holds notebooks"):
        grading.grade([folder], folder, seed=1, exercise_ids=GRADED)
    (tmp_path / "notes.txt").write_text("the teacher's")
    with pytest.raises(FileExistsError, match="not empty and was not written by the grader"):
        grading.grade([folder], tmp_path, seed=1, exercise_ids=GRADED)
    assert (tmp_path / "notes.txt").read_text() == "the teacher's"


@pytest.mark.parametrize("source, names", [
    ("def f(e):\n    return sigma_sqrt(e)", ["sigma_sqrt"]),
    ("from gloss_lite.sigma import sigma_sqrt as s\ndef f(e):\n    return s(e)", ["sigma_sqrt"]),
    ("import gloss_lite.sigma as gs\ndef f(e):\n    return gs.sigma_sqrt(e)", ["sigma_sqrt"]),
    ("def f(e):\n    g = sigma_sqrt\n    return g(e)", ["sigma_sqrt"]),
    ("def sigma_sqrt(e):\n    return 1.0\ndef f(e):\n    return sigma_sqrt(e)", []),  # the student's own
    ("def f(e):\n    return e.median()", []),
    ("%timeit 1\ndef f(e):\n    return sigma_sqrt(e)", ["sigma_sqrt"]),  # an IPython magic line
])
def test_reference_names_reads_the_syntax_tree(source, names):
    assert grading.reference_names(source, ("sigma_sqrt", "pairwise_distances")) == names


@pytest.mark.parametrize("path", sorted(NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb")), ids=lambda p: p.stem)
def test_every_model_solution_is_written_without_its_reference(path):
    from gloss_lite.course.exercises import EXERCISES

    notebook = classroom.read_notebook(path)
    solutions = [(classroom.exercise_role(c)[0], classroom.cell_source(c)) for c in notebook["cells"]
                 if (classroom.exercise_role(c) or ("", ""))[1] == "solution"]
    assert {i for i, _ in solutions} == {i for i in EXERCISES if i.startswith(path.name[:2] + ".")}
    for exercise_id, source in solutions:
        assert grading.reference_names(source, EXERCISES[exercise_id].forbidden) == [], exercise_id


def test_the_student_is_named_by_the_file_or_the_folder(tmp_path):
    notebook = {"cells": [], "metadata": {}}
    assert grading.student_id(tmp_path / "alice.ipynb", notebook) == "alice"
    assert grading.student_id(tmp_path / "bob" / "01_similarity_graph.ipynb", notebook) == "bob"


def test_unreadable_and_foreign_notebooks_are_skipped_with_a_reason(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "broken.ipynb").write_text("{not json")
    (tmp_path / "in" / "other.ipynb").write_text(json.dumps({"cells": [], "metadata": {}}))
    lines = []
    assert grading.grade([tmp_path / "in"], tmp_path / "out", seed=1, log=lines.append) == {}
    assert any("broken.ipynb: not a readable notebook" in line for line in lines)
    assert any("other.ipynb: not a course notebook" in line for line in lines)
    with pytest.raises(FileNotFoundError, match="no submission at"):
        grading.grade([tmp_path / "missing.ipynb"], tmp_path / "out2", seed=1)


def test_the_grader_and_the_classroom_import_without_papermill():
    code = ("import sys; sys.modules['papermill'] = None; "  # `import papermill` now raises ImportError
            "import gloss_lite.course.grading, gloss_lite.course.classroom; print('imported')")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.stdout.strip() == "imported", done.stderr
