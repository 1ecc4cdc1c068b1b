"""gloss_lite.course.classroom: student copies (stubs in place of solutions, stable, failing exactly at
the exercises) and the Colab set-up cells and badges (in step with the README's one URL)."""

import json
import os
import re
import shutil

import nbclient
import nbformat
import papermill
import pytest
import tomllib

import gloss_lite
from gloss_lite.course import classroom, colab
from gloss_lite.course.exercises import EXERCISES
from gloss_lite.course.notebooks import write_notebook
from gloss_lite.course.run import INLINE_BACKEND, NOTEBOOK_DIR, course_metadata, notebook_paths

NOTEBOOKS = notebook_paths()
CELL_TIMEOUT = 300
CHECK_CELL = re.compile(r'check\("(\d\d\.\d)", \w+\)\s*')

SOURCE = '''import torch

def gaussian_kernel(embeddings, sigma):
    """Docstring stays."""
    ### BEGIN SOLUTION
    weights = torch.exp(-embeddings)
    return weights
    ### END SOLUTION

def helper(x):
    if x:
        ### BEGIN SOLUTION
        return 1
        ### END SOLUTION
    return 0'''


def test_strip_solutions_leaves_an_indented_stub_with_the_exercise_hint():
    stripped = classroom.strip_solutions(SOURCE)
    message = ("Exercise 01.2 (the Gaussian kernel): write this part, then run the check below. "
               f"Hint: {EXERCISES['01.2'].hint}.")
    assert stripped.startswith('''import torch

def gaussian_kernel(embeddings, sigma):
    """Docstring stays."""
    ### YOUR CODE BELOW
    raise NotImplementedError(
        'Exercise 01.2 (the Gaussian kernel): write this part, ''')
    assert stripped.endswith('''
    )
    ### YOUR CODE ABOVE

def helper(x):
    if x:
        ### YOUR CODE BELOW
        raise NotImplementedError(
            'write this part of the exercise, then run the check below'
        )
        ### YOUR CODE ABOVE
    return 0''')
    assert max(len(line) for line in stripped.split("\n")) <= 88
    namespace = {}
    exec(compile(stripped, "<student>", "exec"), namespace)
    with pytest.raises(NotImplementedError) as raised:
        namespace["gaussian_kernel"](None, 1.0)
    assert raised.value.args == (message,)
    with pytest.raises(NotImplementedError, match="^write this part of the exercise, then run the check below$"):
        namespace["helper"](True)
    assert namespace["helper"](False) == 0
    assert classroom.strip_solutions("x = 1\n") == "x = 1\n"


@pytest.mark.parametrize("source, message", [
    ("### BEGIN SOLUTION\nx = 1", r"cell 3, line 1: ### BEGIN SOLUTION is never closed; add a line ### END SOLUTION"),
    ("x = 1\n### END SOLUTION", r"cell 3, line 2: ### END SOLUTION without a ### BEGIN SOLUTION before it"),
    ("### BEGIN SOLUTION\n### BEGIN SOLUTION\n### END SOLUTION", r"line 2: ### BEGIN SOLUTION inside another"),
])
def test_broken_markers_are_reported_with_their_place(source, message):
    with pytest.raises(ValueError, match=message):
        classroom.strip_solutions(source, where="cell 3")


@pytest.mark.parametrize("line", ["## BEGIN SOLUTION", "### begin solution", "#BEGIN SOLUTION", "### END  SOLUTION",
                                  "# End Solution"])
def test_a_near_miss_marker_is_an_error_not_a_shipped_solution(line):
    source = f"def f():\n    {line}\n    return 42\n    ### END SOLUTION" if "BEGIN" in line.upper() \
        else f"def f():\n    ### BEGIN SOLUTION\n    return 42\n    {line}"
    with pytest.raises(ValueError, match=rf"01_x.ipynb, cell 7, line \d: '{re.escape(line)}' is not a solution marker"):
        classroom.strip_solutions(source, where="01_x.ipynb, cell 7")
    notebook = {"cells": [{"cell_type": "code", "id": "a", "metadata": {}, "outputs": [], "execution_count": None,
                           "source": classroom.source_lines(source)}], "metadata": {}}
    with pytest.raises(ValueError, match=r"01_x.ipynb, cell 0, line"):
        classroom.student_notebook(notebook, name="01_x.ipynb")


def course_copy(tmp_path, count=2):
    folder = tmp_path / "course"
    folder.mkdir()
    for path in NOTEBOOKS[:count]:
        shutil.copy(path, folder / path.name)
    return sorted(folder.glob("*.ipynb"))


def test_student_copies_are_stable_and_touch_only_their_own_files(tmp_path):
    output = tmp_path / "student"
    output.mkdir()
    extra = output / "07_my_extra_lesson.ipynb"  # the teacher's own lesson, named like a course notebook
    extra.write_text("{}")
    keep = output / "notes.txt"
    keep.write_text("the teacher's own file")
    written = classroom.make_student_copies(output)
    first = {path.name: path.read_bytes() for path in written}
    assert sorted(first) == [path.name for path in NOTEBOOKS]
    assert extra.read_text() == "{}" and keep.exists()
    assert classroom.make_student_copies(output) == written
    assert {path.name: path.read_bytes() for path in written} == first, "a rerun writes the same bytes"
    # an earlier copy whose notebook is gone is removed; the teacher's files stay
    written, removed = classroom.write_student_copies(output, NOTEBOOKS[1:])
    assert removed == [output / NOTEBOOKS[0].name] and not removed[0].exists()
    assert extra.read_text() == "{}" and keep.exists()


def test_student_copies_never_overwrite_a_file_they_did_not_write(tmp_path):
    output = tmp_path / "student"
    output.mkdir()
    theirs = output / NOTEBOOKS[0].name
    theirs.write_text("a student's work")
    with pytest.raises(FileExistsError, match=rf"would overwrite files that this command did not write .*"
                                              rf"{re.escape(str(theirs))}; move them away"):
        classroom.make_student_copies(output)
    assert theirs.read_text() == "a student's work"
    assert sorted(p.name for p in output.iterdir()) == [theirs.name], "nothing written when one copy is blocked"
    theirs.unlink()
    written = classroom.make_student_copies(output)
    written[1].write_text("edited by hand after it was written")
    with pytest.raises(FileExistsError, match=re.escape(str(written[1]))):
        classroom.make_student_copies(output)


def test_student_copies_refuse_the_folder_of_the_notebooks_they_read(tmp_path):
    with pytest.raises(ValueError, match="holds the instructor notebooks being read"):
        classroom.make_student_copies(NOTEBOOK_DIR)
    notebooks = course_copy(tmp_path)
    before = {path: path.read_bytes() for path in notebooks}
    with pytest.raises(ValueError, match="holds the instructor notebooks being read"):
        classroom.make_student_copies(tmp_path / "course" / "." , notebooks)
    (tmp_path / "link").symlink_to(tmp_path / "course")
    with pytest.raises(ValueError, match="holds the instructor notebooks being read"):
        classroom.make_student_copies(tmp_path / "link", notebooks)
    assert {path: path.read_bytes() for path in notebooks} == before


def test_the_command_line_says_what_it_would_overwrite(tmp_path, capsys):
    (tmp_path / NOTEBOOKS[0].name).write_text("mine")
    assert classroom.main(["student", "--output", str(tmp_path)]) == 2
    assert "would overwrite files that this command did not write" in capsys.readouterr().err
    assert (tmp_path / NOTEBOOKS[0].name).read_text() == "mine"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_a_student_copy_differs_only_in_solutions_badge_and_model_answers(path):
    instructor = classroom.read_notebook(path)
    before = json.dumps(instructor)
    student = classroom.student_notebook(instructor, name=path.name)
    assert json.dumps(instructor) == before, "the instructor's notebook must not change"
    answers = [c for c in instructor["cells"] if classroom.is_model_answer(c)]
    assert len(answers) == 1 and classroom.cell_source(answers[0]).startswith("### Model answers")
    kept = [c for c in instructor["cells"] if not classroom.is_model_answer(c)]
    assert [c.get("id") for c in student["cells"]] == [c.get("id") for c in kept]
    assert not any("Model answers" in classroom.cell_source(c) for c in student["cells"])
    assert student["metadata"] == instructor["metadata"]
    changed = 0
    for mine, theirs in zip(kept, student["cells"]):
        source, copy = classroom.cell_source(mine), classroom.cell_source(theirs)
        if classroom.has_solutions(source):
            changed += 1
            assert "### BEGIN SOLUTION" not in copy and "raise NotImplementedError(" in copy
            assert classroom.exercise_role(theirs)[1] == "solution"
            assert theirs["metadata"]["gloss_lite"]["frame"] == classroom.frame_digest(copy)
            compile(copy, path.name, "exec")
        elif colab.BADGE_PATTERN.search(source):
            assert not colab.BADGE_PATTERN.search(copy) and copy.splitlines()[0] == source.splitlines()[0]
            assert copy == source.replace(colab.BADGE_PATTERN.search(source).group(0) + "\n\n", "")
        else:
            assert copy == source
    assert changed >= 3


def execute_allowing_errors(notebook: dict, parameters: dict, folder) -> nbformat.NotebookNode:
    """Run every cell, even after an error (as a student would, cell after cell)."""
    source, prepared = folder / "student.ipynb", folder / "prepared.ipynb"
    write_notebook(notebook, source)
    papermill.execute_notebook(str(source), str(prepared), parameters=parameters, prepare_only=True,
                               kernel_name="python3", progress_bar=False)
    os.environ["MPLBACKEND"] = INLINE_BACKEND
    client = nbclient.NotebookClient(nbformat.read(prepared, as_version=4), timeout=CELL_TIMEOUT,
                                     kernel_name="python3", allow_errors=True,
                                     resources={"metadata": {"path": str(NOTEBOOK_DIR)}})
    return client.execute()


@pytest.mark.notebook
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_a_student_copy_runs_and_fails_exactly_at_its_exercises(path, tmp_path):
    student = classroom.student_notebook(classroom.read_notebook(path), name=path.name)
    executed = execute_allowing_errors(student, course_metadata(path)["smoke_parameters"], tmp_path)
    failed = {}
    for index, cell in enumerate(executed.cells):
        errors = [o for o in cell.get("outputs", []) if o.get("output_type") == "error"]
        if errors:
            failed[index] = errors[0]
    calls = {index: CHECK_CELL.fullmatch(cell.source) for index, cell in enumerate(executed.cells)}
    checks = {index: call.group(1) for index, call in calls.items() if call}
    assert len(checks) >= 2
    unexpected = {i: f"{e['ename']}: {e['evalue'][:200]}" for i, e in failed.items() if i not in checks}
    assert not unexpected, f"{path.name}: cells that are not exercise checks failed: {unexpected}"
    for index, exercise_id in checks.items():
        assert index in failed, f"{path.name}: the check of exercise {exercise_id} passed in the student copy"
        assert failed[index]["ename"] == "NotImplementedError", failed[index]["evalue"]
        assert failed[index]["evalue"].startswith(f"Exercise {exercise_id} ("), failed[index]["evalue"]


# -- Colab -----------------------------------------------------------------------------------

def test_the_repository_course_is_in_step_with_its_readme():
    assert colab.colab_problems() == []
    url = colab.repository_url()
    for path in NOTEBOOKS:
        notebook = classroom.read_notebook(path)
        setup = classroom.cell_source(notebook["cells"][0])
        assert notebook["cells"][0]["cell_type"] == "code" and 'if "google.colab" in sys.modules:' in setup
        extras = "[integrations]" if path.name.startswith("08_") else ""  # 08 imports sentence-transformers
        assert f'    TAG = "v{gloss_lite.__version__}"' in setup.splitlines(), setup
        assert f'    REPOSITORY = "{url}"' in setup.splitlines(), setup
        assert f'    SOURCE = f"gloss-lite{extras} @ git+{{REPOSITORY}}@{{TAG}}"' in setup.splitlines(), setup
        assert max(map(len, setup.splitlines())) <= 88, "the set-up cell fits the page"
        assert "clone" not in setup and "chdir" not in setup and "notebooks" not in setup, \
            "the set-up cell must not bring the instructor notebooks along"
        assert colab.colab_url(url, f"notebooks/{path.name}") in classroom.cell_source(notebook["cells"][1])


def test_the_release_tag_is_the_package_version():
    assert colab.release_tag() == f"v{gloss_lite.__version__}"
    pyproject = tomllib.loads((classroom.ROOT / "pyproject.toml").read_text())
    assert "version" in pyproject["project"]["dynamic"] and "version" not in pyproject["project"]
    assert pyproject["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "gloss_lite.__version__"}  # one source


def test_the_setup_cell_does_nothing_outside_colab():
    setup = colab.setup_source("https://github.com/owner/name")
    namespace = {}
    exec(compile(setup, "<setup>", "exec"), namespace)  # plain Python: no magic, nothing run outside Colab
    assert set(namespace) <= {"__builtins__", "sys"}


def copy_course(tmp_path, url):
    folder = tmp_path / "notebooks"
    folder.mkdir()
    notebooks = [folder / path.name for path in NOTEBOOKS[:2]]
    for path, copy in zip(NOTEBOOKS, notebooks):
        shutil.copy(path, copy)
    readme = tmp_path / "README.md"
    text = colab.README.read_text(encoding="utf-8")
    readme.write_text(text.replace(colab.repository_url(), url), encoding="utf-8")
    return readme, notebooks


def test_a_new_repository_url_is_reported_then_written_everywhere(tmp_path):
    readme, notebooks = copy_course(tmp_path, "https://github.com/someone/fork")
    problems = colab.colab_problems(readme, notebooks)
    assert any("README.md: a Colab link points at another repository" in p for p in problems)
    assert any(p.startswith(f"{notebooks[0].name}: the set-up cell or the Colab badge") for p in problems)
    changed = colab.sync_colab(readme, notebooks)
    assert set(changed) == {readme, *notebooks}
    assert colab.colab_problems(readme, notebooks) == []
    assert "https://colab.research.google.com/github/someone/fork/blob/main/notebooks/00_overview.ipynb" in \
        readme.read_text(encoding="utf-8")
    notebook = classroom.read_notebook(notebooks[0])
    assert '    REPOSITORY = "https://github.com/someone/fork"' in classroom.cell_source(notebook["cells"][0])
    assert sum(classroom.cell_source(c).startswith(colab.SETUP_MARKER) for c in notebook["cells"]) == 1
    assert colab.sync_colab(readme, notebooks) == [], "a second run changes nothing"


def test_the_readme_must_name_the_repository_once(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("# A course\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"define the repository once, as a line '\[repository\]: https://github"):
        colab.repository_url(readme)
    readme.write_text("[repository]: https://github.com/a/b\n[repository]: https://github.com/c/d\n")
    with pytest.raises(ValueError, match=r"\(found 2\)"):
        colab.repository_url(readme)
