"""gloss_lite.course.grading: a class of generated submissions graded to the expected table, cheats included.

Each submission is the student copy of notebook 01 (or 03) with its solutions filled in from the
instructor's notebook, then changed the way a student might: a wrong answer, one that raises, one
that never returns, one that calls the reference, a deleted check cell, a duplicated cell, one
edited outside its markers, one with a blank line added or broken cell metadata. Beside them, one
submission per way of cheating (``CHEATS``): each must earn 0 for the exercise it cheats on, while
the honest ones earn full marks. The whole class is graded in one run, with real workers.
"""

import csv
import json
import os
import re
import subprocess
import sys
import time

import pytest

from gloss_lite.course import classroom, grading, submissions
from gloss_lite.course.exercises import EXERCISES
from gloss_lite.course.run import NOTEBOOK_DIR

INSTRUCTOR = {number: classroom.read_notebook(next(NOTEBOOK_DIR.glob(f"{number}_*.ipynb"))) for number in ("01", "03")}
GRADED = ["01.1", "01.2", "03.1"]
SEED = 20251


def solution_body(exercise_id):
    notebook = INSTRUCTOR[exercise_id[:2]]
    (cell,) = [c for c in notebook["cells"] if classroom.exercise_role(c) == (exercise_id, "solution")]
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


def set_source(cell, text):
    cell["source"] = classroom.source_lines(text)


def submission(number="01", change=None, **bodies):
    """A student copy of notebook ``number`` with every exercise's solution filled in (``bodies``:
    ``_01_2="..."`` replaces that exercise's body), then ``change(notebook)``."""
    notebook = classroom.student_notebook(INSTRUCTOR[number], name=number)
    for exercise_id in [i for i in EXERCISES if i.startswith(number + ".")]:
        body = bodies.get("_" + exercise_id.replace(".", "_"), solution_body(exercise_id))
        cell = cell_of(notebook, exercise_id, "solution")
        set_source(cell, fill(classroom.cell_source(cell), body))
    if change:
        change(notebook)
    return notebook


def only_01_2(notebook):  # a cheat hands in 01.2 only: 01.1 is "solution cell missing", without a worker
    notebook["cells"] = [c for c in notebook["cells"] if (classroom.exercise_role(c) or ("",))[0] != "01.1"]


def delete_check(notebook):
    notebook["cells"].remove(cell_of(notebook, "01.2", "check"))


def duplicate_solution(notebook):
    cell = cell_of(notebook, "01.2", "solution")
    wrong = json.loads(json.dumps(cell))  # an earlier, wrong try left above the right one
    set_source(wrong, fill(classroom.cell_source(cell), "    return embeddings"))
    notebook["cells"].insert(notebook["cells"].index(cell), wrong)


def rename_argument(notebook):
    cell = cell_of(notebook, "01.2", "solution")
    set_source(cell, classroom.cell_source(cell).replace("(embeddings, sigma)", "(x, s)", 1))


def blank_line_above_marker(notebook):
    cell = cell_of(notebook, "01.2", "solution")
    marker = f"    {classroom.STUDENT_BEGIN}"
    set_source(cell, classroom.cell_source(cell).replace(marker, "\n" + marker))


def broken_metadata(notebook):
    parameters = next(c for c in notebook["cells"] if "parameters" in c["metadata"].get("tags", []))
    parameters["metadata"]["tags"] = 7
    notebook["cells"][0]["metadata"] = ["a list, not a mapping"]


def claims_to_be_alice(notebook):
    parameters = next(c for c in notebook["cells"] if "parameters" in c["metadata"].get("tags", []))
    set_source(parameters, classroom.cell_source(parameters) + '\nSTUDENT_ID = "alice"')
    only_01_2(notebook)


CORRECT_12 = solution_body("01.2")
HONEST = {  # student: (notebook, the 01.2 verdict, its points); 01.1 is correct in all of them
    "alice": (submission(), "passed", 2),
    "bob": (submission(_01_2="    unit = embeddings / embeddings.norm(dim=1, keepdim=True)\n"  # W_ii = 1, not 0
                              "    return torch.exp(-(2 - 2 * unit @ unit.T) / (2 * sigma**2))"),
            "not yet", 0),
    "carol": (submission(_01_2="    raise ValueError('sigma must be a tensor')"), "not yet", 0),
    "dave": (submission(_01_2="    while True:\n        pass"), "time limit", 0),
    "erin": (submission(_01_2="    from gloss_lite.graph import gaussian_affinity as kernel\n"
                              "    return kernel(embeddings, sigma)"), "uses the reference implementation", 0),
    "frank": (submission(change=delete_check), "check cell missing", 0),
    "grace": (submission(change=duplicate_solution), "passed", 2),
    "ivan": (submission(change=rename_argument), "solution cell edited outside its markers", 0),
    "judy": (submission(change=blank_line_above_marker), "passed", 2),
    "kate": (submission(change=broken_metadata), "passed", 2),
    "leo": (submission(_01_2="    import signal\n    signal.setitimer(signal.ITIMER_REAL, 0)\n"
                             "    signal.signal(signal.SIGALRM, signal.SIG_IGN)\n    while True:\n        pass"),
            "time limit", 0),
    "mona": (submission(_01_2="    import sys\n    sys.stderr.write('x' * 120_000_000)\n    sys.stderr.flush()\n"
                              + CORRECT_12), "not yet", 0),  # 120 MB to stderr: a file of 64 MB at most
}

SEND_FORGED = """    import gc, json, os, socket, struct
    forged = [{"value": {"opaque": "passed", "number": 1.0}}, {"exercise": "01.2", "status": "passed", "credit": 9}]
    for channel in [o for o in gc.get_objects() if isinstance(o, socket.socket)]:
        for message in forged:
            data = json.dumps(message).encode()
            try:
                channel.sendall(struct.pack("!Q", len(data)) + data)
            except OSError:
                pass
    os._exit(0)"""

CHEATS = {  # student: (what it tries, the 01.2 body); each must earn 0 for 01.2
    "by-getattr": ("the reference by getattr on a string",
                   "    import gloss_lite\n"
                   "    return getattr(gloss_lite, 'gaussian_' + 'affinity')(embeddings, sigma)"),
    "by-importlib": ("the reference by importlib",
                     "    import importlib\n"
                     "    graph = importlib.import_module('gloss_lite.' + 'graph')\n"
                     "    return getattr(graph, 'gaussian_' + 'affinity')(embeddings, sigma)"),
    "by-globals": ("the notebook's import of the reference, by globals()",
                   "    return globals()['gaussian_' + 'affinity'](embeddings, sigma)"),
    "by-eval": ("the reference by eval",
                "    return eval(\"__import__('gloss_lite.graph', fromlist=['x']).gaussian_\" + 'affinity')"
                "(embeddings, sigma)"),
    "by-exec": ("the reference by exec",
                "    scope = {}\n    exec('from gloss_lite.graph import gaussian_affinity as f', scope)\n"
                "    return scope['f'](embeddings, sigma)"),
    "by-scratch-module": ("a module written to the scratch folder that imports the reference",
                          "    import importlib, pathlib, sys\n"
                          "    pathlib.Path('helper_module.py').write_text("
                          "'from gloss_lite.graph import gaussian_affinity as kernel\\n')\n"
                          "    sys.path.insert(0, '.')\n    importlib.invalidate_caches()\n"
                          "    return importlib.import_module('helper_module').kernel(embeddings, sigma)"),
    "by-attrgetter": ("the reference by operator.attrgetter",
                      "    import operator, gloss_lite\n"
                      "    return operator.attrgetter('graph.gaussian_affinity')(gloss_lite)(embeddings, sigma)"),
    "by-source-file": ("the package's source file, read and run",
                       "    import pathlib\n    import gloss_lite.lpa as lpa\n"
                       "    scope = {}\n    exec(pathlib.Path(lpa.__file__).with_name('graph.py').read_text(), scope)\n"
                       "    return scope['gaussian_affinity'](embeddings, sigma)"),
    "by-explorer": ("a package function off the forbidden list (explorer)",
                    "    from gloss_lite.explorer import explore\n"
                    "    return explore(embeddings, torch.zeros(len(embeddings), dtype=torch.long), 1, sigma=sigma)"
                    ".affinity"),
    "by-course-reference": ("the course's own reference module",
                            "    from gloss_lite.course.exercises import ex01\n"
                            "    reference = ex01.EXERCISES['01.2'].checker.__closure__[1].cell_contents\n"
                            "    return reference(embeddings, sigma)"),
    "replaces-check": ("replacing check and the checker",
                       "    import builtins\n    builtins.check = lambda *a, **k: None\n"
                       "    import gloss_lite.course.checking as checking\n"
                       "    checking.run_checker = lambda *a, **k: 5\n    return embeddings"),
    "replaces-comparison": ("replacing torch's comparisons where it runs",
                            "    torch.equal = lambda *a, **k: True\n    torch.allclose = lambda *a, **k: True\n"
                            "    torch.Tensor.__sub__ = lambda self, other: torch.zeros_like(self)\n"
                            "    return embeddings"),
    "forges-channel": ("forged replies on the worker's channel, then exit", SEND_FORGED),
    "float-trick": ("an object whose __float__ raises a failure with credit 100",
                    "    class Mismatch(Exception):\n        credit = 100.0\n"
                    "    class Sneaky:\n        def __float__(self):\n            raise Mismatch('passed', 100.0)\n"
                    "    return Sneaky()"),
    "reads-classmates": ("reading a classmate's submission and running it",
                         "    import json, pathlib\n    scope = {'torch': torch}\n"
                         "    alice = json.loads(pathlib.Path(CLASS, 'alice.ipynb').read_text())\n"
                         "    for cell in alice['cells']:\n"
                         "        if cell.get('metadata', {}).get('gloss_lite', {}).get('role') == 'solution':\n"
                         "            exec(''.join(cell['source']), scope)\n"
                         "    return scope['gaussian_kernel'](embeddings, sigma)"),
    "reads-seed": ("reading the grader's command line, environment and memory for the seed",
                   "    import os\n    found = []\n    pid = os.getppid()\n"
                   "    for name in ('cmdline', 'environ', 'mem'):\n"
                   "        for target in (pid, 1, os.getpid() - 1):\n"
                   "            try:\n                found.append(open(f'/proc/{target}/{name}', 'rb').read(4000))\n"
                   "            except OSError as error:\n                found.append(repr(error).encode())\n"
                   "    raise RuntimeError(b' | '.join(found).decode('latin-1'))"),
    "detaches-process": ("a detached process that rewrites grades.csv after the grader finished",
                         "    import os, subprocess\n    attempts = []\n"
                         "    for start in (lambda: subprocess.Popen(['sh', '-c', f'sleep 3; echo forged > {GRADES}'],"
                         " start_new_session=True), os.fork):\n"
                         "        try:\n            start()\n        except OSError as error:\n"
                         "            attempts.append(str(error))\n"
                         "    return embeddings"),
    "writes-outside": ("writing over the grader's and the class's files",
                       "    import pathlib\n    pathlib.Path(GRADES).write_text('forged')\n"
                       "    pathlib.Path(CLASS, 'alice.ipynb').write_text('{}')\n" + CORRECT_12),
    "mallory": ("a STUDENT_ID that claims to be alice", None),
}
CHEAT_03 = ("another exercise's cell that wraps the reference: 03.1 calls a helper of 03.2's cell around split_mask",
            "    return masked(labels, gamma, generator)")


def cheat_notebook(name, body, folder, grades):
    if name == "mallory":
        return submission(change=claims_to_be_alice, _01_2="    return embeddings")
    body = body.replace("CLASS", repr(str(folder))).replace("{GRADES}", str(grades))
    body = body.replace("GRADES", repr(str(grades)))
    return submission(change=only_01_2, _01_2=body)


def wraps_reference(notebook):
    cell = cell_of(notebook, "03.2", "solution")
    set_source(cell, classroom.cell_source(cell) + "\n\n\ndef masked(labels, gamma, generator):\n"
               "    return split_mask(labels, gamma, generator=generator)\n")


def save(notebook, path):
    """A submission as a student's tools might leave it (any JSON; kate's metadata would not pass nbformat)."""
    path.write_text(json.dumps(notebook, indent=1), encoding="utf-8")


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    root = tmp_path_factory.mktemp("class")
    folder, grades = root / "submissions", root / "grades"
    folder.mkdir()
    for name, (notebook, _, _) in HONEST.items():
        save(notebook, folder / f"{name}.ipynb")
    for name, (_, body) in CHEATS.items():
        save(cheat_notebook(name, body, folder, grades / "grades.csv"), folder / f"{name}.ipynb")
    save(submission("03", change=wraps_reference, _03_1=CHEAT_03[1]), folder / "wraps-03.ipynb")
    before = {path.name: path.read_bytes() for path in folder.iterdir()}
    course_before = {path.name: path.read_bytes() for path in NOTEBOOK_DIR.iterdir()}
    lines = []
    results = grading.grade([folder], grades, seed=SEED, exercise_ids=GRADED, exercise_timeout=4,
                            notebook_timeout=120, log=lines.append)
    return root, folder, results, lines, before, course_before


def table(root):
    with open(root / "grades" / "grades.csv", newline="") as handle:
        rows = list(csv.reader(handle))
    return rows[0], {row[0]: row[1:] for row in rows[1:]}


def test_the_class_is_graded_to_the_expected_table_and_every_cheat_earns_nothing(graded):
    root, _, results, lines, _, _ = graded
    header, rows = table(root)
    print("\n" + (root / "grades" / "grades.csv").read_text())
    assert header == ["student", "01.1", "01.2", "03.1", "total"]
    for student, (_, status, points) in HONEST.items():
        assert rows[student] == ["2", f"{points}", "", f"{2 + points}"], student
        (notebook,) = results[student]
        assert {v.exercise: v.status for v in notebook.verdicts} == {"01.1": "passed", "01.2": status}, student
    for student in CHEATS:
        assert rows[student] == ["0", "0", "", "0"], (student, results[student][0].verdicts)
    assert rows["wraps-03"] == ["", "", "0", "0"]
    assert "alice" in rows and rows["alice"] == ["2", "2", "", "4"], "mallory's STUDENT_ID does not name her alice"
    count = len(HONEST) + len(CHEATS) + 1
    assert len([line for line in lines if re.match(rf"\[\d+/{count}\] [\w-]+ \(", line)]) == count
    assert any(line.startswith(f"\n{count} students graded") for line in lines)


def test_feedback_says_what_went_wrong_and_gives_the_hint(graded):
    root = graded[0]
    feedback = {path.stem: path.read_text() for path in (root / "grades" / "feedback").glob("*.md")}
    assert sorted(feedback) == sorted([*HONEST, *CHEATS, "wraps-03"])
    assert "## Exercise 01.2 · the Gaussian kernel: 0 / 2" in feedback["bob"]
    assert "largest difference" in feedback["bob"] and "Hint: W_ij = exp(" in feedback["bob"]
    assert "your function raised ValueError: sigma must be a tensor" in feedback["carol"]
    assert "did not finish within 4 s" in feedback["dave"] and "did not finish within 4 s" in feedback["leo"]
    assert "File too large" in feedback["mona"]
    assert "calls gaussian_affinity" in feedback["erin"]
    assert "check('01.2', gaussian_kernel) was deleted" in feedback["frank"]
    assert "the solution cell appears 2 times; the last one was graded" in feedback["grace"]
    assert "YOUR CODE BELOW" in feedback["ivan"]
    assert "cannot be imported while exercise 01.2 is graded" in feedback["by-importlib"]
    assert "expected a tensor, got Sneaky" in feedback["float-trick"]
    assert "expected a tensor, got passed" in feedback["forges-channel"]
    assert "not allowed here" in feedback["reads-seed"] and str(SEED) not in feedback["reads-seed"]
    assert "split_mask" in feedback["wraps-03"] and "cannot be imported while exercise 03.1" in feedback["wraps-03"]
    for text in feedback.values():
        assert f"seed={SEED}" not in text and "Random inputs from seed" not in text, "the grading seed stays private"


def test_nothing_a_submission_does_reaches_the_grader_the_course_or_the_class(graded):
    root, folder, _, _, before, course_before = graded
    grades = (root / "grades" / "grades.csv").read_bytes()
    time.sleep(4)  # longer than the detached process of "detaches-process" would have waited
    assert (root / "grades" / "grades.csv").read_bytes() == grades
    assert {path.name: path.read_bytes() for path in folder.iterdir()} == before
    assert {path.name: path.read_bytes() for path in NOTEBOOK_DIR.iterdir()} == course_before
    assert sorted(p.name for p in root.iterdir()) == ["grades", "submissions"]


def test_a_regrade_replaces_one_students_row_and_keeps_the_others(graded, tmp_path):
    root, folder, _, _, _, _ = graded
    book = tmp_path / "book"
    book.mkdir()
    for path in (root / "grades").rglob("*"):  # a copy of the graded class's gradebook
        target = book / path.relative_to(root / "grades")
        target.parent.mkdir(exist_ok=True)
        if path.is_file():
            target.write_bytes(path.read_bytes())
    late = tmp_path / "late"
    late.mkdir()
    save(submission(change=delete_check), late / "bob.ipynb")  # bob again: 01.2 now without its check
    save(submission(change=delete_check), late / "zoe.ipynb")  # a new student
    others = {p.name: p.read_bytes() for p in (book / "feedback").iterdir() if p.stem not in ("bob", "zoe")}
    lines = []
    grading.grade([late], book, seed=SEED, exercise_ids=["01.2"], log=lines.append)
    with open(book / "grades.csv", newline="") as handle:
        rows = {row[0]: row[1:] for row in list(csv.reader(handle))[1:]}
    assert rows["bob"] == ["2", "0", "", "2"] and rows["zoe"] == ["", "0", "", "0"]
    assert rows["alice"] == ["2", "2", "", "4"] and len(rows) == len(HONEST) + len(CHEATS) + 2
    assert {p.name: p.read_bytes() for p in (book / "feedback").iterdir() if p.stem not in ("bob", "zoe")} == others
    assert "**Check cell missing.**" in (book / "feedback" / "bob.md").read_text()
    assert any("bob: notebook 01 graded again; the row of bob in grades.csv is replaced (2 -> 2 points)" in line
               for line in lines)


def test_an_ended_worker_leaves_no_process_behind():
    from gloss_lite.course.workers import Workers

    job = {"exercise": "01.2", "function": "gaussian_kernel", "face": [], "withheld": [], "imports": [],
           "import_names": {}, "cells": [["01.2", "import time\ndef gaussian_kernel(e, s):\n    time.sleep(60)"]]}
    with Workers() as workers:
        worker = workers.start(job, memory_mb=None, cpu_seconds=60)
        assert worker.expect(time.monotonic() + 120)["ready"] is True
        assert worker.expect(time.monotonic() + 30) == {"defined": True}
        pid = worker.pid
        worker.end()
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
        assert not [p for p in os.listdir("/proc") if p.isdigit() and _parent(p) == workers.process.pid]


def _parent(pid: str) -> int:
    try:
        return int(open(f"/proc/{pid}/stat").read().rpartition(")")[2].split()[1])
    except OSError:
        return -1


def _face_closure(face) -> set[str]:
    """The method modules a worker loads for ``face``: those listed and the package modules they import."""
    import ast

    from gloss_lite.course.workers import PACKAGE_DIR

    found, todo = set(), list(face)
    while todo:
        name = todo.pop()
        if name in found:
            continue
        found.add(name)
        tree = ast.parse((PACKAGE_DIR / f"{name}.py").read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                todo += [node.module] if node.module else [alias.name for alias in node.names]
    return found


@pytest.mark.parametrize("exercise_id", sorted(EXERCISES))
def test_no_exercise_offers_its_reference_in_its_face(exercise_id):
    import importlib

    exercise = EXERCISES[exercise_id]
    for name in _face_closure(exercise.face):
        module = importlib.import_module(f"gloss_lite.{name}")
        offered = [f for f in exercise.forbidden if "." not in f and hasattr(module, f)]
        assert not offered, f"{exercise_id}: its face module {name} holds {offered}"
    for withheld in exercise.withheld:  # each names a library or a torch function that exists
        owner, _, attribute = withheld.rpartition(".")
        if owner:
            assert hasattr(importlib.import_module(owner) if owner != "torch.Tensor" else __import__("torch").Tensor,
                           attribute), withheld


# ---------------------------------------------------------------------------------------------
# Reading submissions (no worker needed)
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("source, names", [
    ("def f(e):\n    return sigma_sqrt(e)", ["sigma_sqrt"]),
    ("from gloss_lite.sigma import sigma_sqrt as s\ndef f(e):\n    return s(e)", ["sigma_sqrt"]),
    ("import gloss_lite.sigma as gs\ndef f(e):\n    return gs.sigma_sqrt(e)", ["sigma_sqrt"]),
    ("def f(e):\n    g = sigma_sqrt\n    return g(e)", ["sigma_sqrt"]),
    ("def sigma_sqrt(e):\n    return 1.0\ndef f(e):\n    return sigma_sqrt(e)", []),  # the student's own
    ("def f(e, sigma_sqrt=None):\n    return sigma_sqrt(e)", []),  # an argument of that name
    ("def f(e):\n    return e.median()", []),
    ("%timeit 1\ndef f(e):\n    return sigma_sqrt(e)", ["sigma_sqrt"]),  # an IPython magic line
])
def test_reference_names_reads_the_syntax_tree(source, names):
    assert submissions.reference_names(source, ("sigma_sqrt", "pairwise_distances")) == names


def test_a_helper_of_the_students_own_in_another_solution_cell_is_not_a_reference_call():
    defined = submissions.defined_names(["def propagate(T, F):\n    return T @ F"])
    assert submissions.reference_names("def harmonic(T):\n    return propagate(T, T)", ("propagate",), defined) == []


@pytest.mark.parametrize("path", sorted(NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb")), ids=lambda p: p.stem)
def test_every_model_solution_is_written_without_its_reference(path):
    notebook = classroom.read_notebook(path)
    solutions = [(classroom.exercise_role(c)[0], classroom.cell_source(c)) for c in notebook["cells"]
                 if (classroom.exercise_role(c) or ("", ""))[1] == "solution"]
    assert {i for i, _ in solutions} == {i for i in EXERCISES if i.startswith(path.name[:2] + ".")}
    for exercise_id, source in solutions:
        assert submissions.reference_names(source, EXERCISES[exercise_id].forbidden) == [], exercise_id


def test_the_student_is_named_by_the_file_or_the_folder_never_by_the_notebook(tmp_path):
    assert submissions.student_of(tmp_path / "alice.ipynb") == "alice"
    assert submissions.student_of(tmp_path / "bob" / "01_similarity_graph.ipynb") == "bob"


def test_only_the_imports_the_solutions_use_run_in_the_worker():
    notebook = {"cells": [
        {"cell_type": "code", "metadata": {},
         "source": "import pandas as pd\nimport torch\n"
                   "from gloss_lite.graph import gaussian_affinity, squared_distances"},
        {"cell_type": "code", "metadata": {"gloss_lite": {"exercise": "01.2", "role": "solution"}},
         "source": "def gaussian_kernel(e, s):\n    return torch.exp(-squared_distances(e))"}]}
    sources = [source for _, source in submissions.solution_cells(notebook)]
    assert submissions.imports(notebook, sources) == {
        "import torch": ["torch"], "from gloss_lite.graph import squared_distances": ["squared_distances"]}


def test_the_grader_and_the_classroom_import_without_papermill():
    code = ("import sys; sys.modules['papermill'] = None; "  # `import papermill` now raises ImportError
            "import gloss_lite.course.grading, gloss_lite.course.classroom; print('imported')")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.stdout.strip() == "imported", done.stderr
