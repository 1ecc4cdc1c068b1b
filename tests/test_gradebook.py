"""The grader's output folder as a gradebook, and every refusal before a submission runs.

The submissions here are graded without a worker: exercise 01.2 only, with its check cell
deleted, is decided by reading the notebook ("check cell missing", 0 of 2 points), so each test
takes a moment. The grading of code itself is in ``test_grading.py``.
"""

import csv
import errno
import json

import pytest
from test_grading import delete_check, save, submission

from gloss_lite.course import gradebook, grading
from gloss_lite.course.gradebook import GradebookError, feedback_name, spreadsheet_safe
from gloss_lite.course.run import NOTEBOOK_DIR

NOTEBOOK = submission(change=delete_check)  # 01.2 decided without running: "check cell missing"


def hand_in(folder, *names, notebook=NOTEBOOK):
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        path = folder / f"{name}.ipynb"
        path.parent.mkdir(parents=True, exist_ok=True)
        save(notebook, path)
    return folder


def grade(folder, output, **settings):
    lines = []
    grading.grade([folder], output, seed=1, exercise_ids=settings.pop("exercise_ids", ["01.2"]),
                  log=lines.append, **settings)
    return lines


def rows(output):
    with open(output / "grades.csv", newline="", encoding="utf-8") as handle:
        return list(csv.reader(handle))


def test_grades_accumulate_and_a_regrade_says_whose_row_it_replaced(tmp_path):
    output = tmp_path / "grades"
    grade(hand_in(tmp_path / "first", "alice", "bob"), output)
    alice = (output / "feedback" / "alice.md").read_bytes()
    lines = grade(hand_in(tmp_path / "late", "bob", "carol"), output)
    assert [row[0] for row in rows(output)[1:]] == ["alice", "bob", "carol"]
    assert (output / "feedback" / "alice.md").read_bytes() == alice
    assert any("bob: notebook 01 graded again; the row of bob in grades.csv is replaced" in line for line in lines)
    assert not any("carol: notebook 01 graded again" in line for line in lines)


def test_a_teachers_edits_are_kept_and_a_regrade_over_them_is_refused(tmp_path):
    output = tmp_path / "grades"
    grade(hand_in(tmp_path / "first", "alice", "bob"), output)
    table = rows(output)
    table[1][1] = "1.5"  # the teacher gives alice half the points by hand
    table.append(["dave", "2", "2"])  # and adds a student graded elsewhere
    with open(output / "grades.csv", "w", newline="", encoding="utf-8") as handle:
        csv.writer(handle, lineterminator="\n").writerows(table)
    grade(hand_in(tmp_path / "late", "carol"), output)  # another student: the edits stay
    assert rows(output)[1:] == [["alice", "1.5", "0"], ["bob", "0", "0"], ["carol", "0", "0"], ["dave", "2", "2"]]
    edited = (output / "grades.csv").read_bytes()
    with pytest.raises(GradebookError, match=r"grades.csv holds your edits to the row\(s\) of alice"):
        grade(hand_in(tmp_path / "again", "alice"), output)
    assert (output / "grades.csv").read_bytes() == edited
    (output / "feedback" / "bob.md").write_text("my own notes for bob", encoding="utf-8")
    with pytest.raises(GradebookError, match="the feedback of bob was edited"):
        grade(hand_in(tmp_path / "bob-again", "bob"), output)
    assert (output / "feedback" / "bob.md").read_text(encoding="utf-8") == "my own notes for bob"


@pytest.mark.parametrize("damage, message", [
    (lambda path: path.write_bytes("student,01.2,total\nb\xe9a,0,0\n".encode("latin-1")), "cannot be read as UTF-8"),
    (lambda path: path.write_text("student,01.2,comment,total\nalice,0,,0\n"), "the columns of .* were changed"),
])
def test_an_unreadable_or_restructured_grades_file_is_refused_before_grading(tmp_path, damage, message):
    output = tmp_path / "grades"
    grade(hand_in(tmp_path / "first", "alice"), output)
    damage(output / "grades.csv")
    before = (output / "grades.csv").read_bytes()
    with pytest.raises(GradebookError, match=message):
        grade(hand_in(tmp_path / "late", "bob"), output)
    assert (output / "grades.csv").read_bytes() == before


@pytest.mark.parametrize("record", [
    [], {"format": 2, "files": {"/etc/passwd": []}, "students": {}, "rows": {}},
    {"format": 2, "files": {"../outside.md": []}, "students": {}, "rows": {}},
    {"format": 2, "files": {}, "students": {"alice": {"01": {"verdicts": [{"exercise": 1}]}}}, "rows": {}},
], ids=["a list", "an absolute path", "a path outside", "a forged verdict"])
def test_a_record_the_grader_did_not_write_is_refused(tmp_path, record):
    output = tmp_path / "grades"
    output.mkdir()
    (output / gradebook.RECORD).write_text(json.dumps(record))
    with pytest.raises(GradebookError, match="is not the grader's record"):
        grade(hand_in(tmp_path / "in", "alice"), output)
    assert sorted(p.name for p in output.iterdir()) == [gradebook.RECORD]


def test_output_folders_that_are_not_the_graders_are_refused_before_anything_runs(tmp_path):
    folder = hand_in(tmp_path / "in", "alice")
    (tmp_path / "a-file").write_text("mine")
    with pytest.raises(GradebookError, match="is a file"):
        grade(folder, tmp_path / "a-file")
    with pytest.raises(GradebookError, match="cannot write into --output /proc/gloss-grades"):
        grade(folder, "/proc/gloss-grades")  # read-only for every user, root included
    with pytest.raises(GradebookError, match="holds notebooks"):
        grade(folder, folder)
    with pytest.raises(GradebookError, match="holds notebooks"):
        grade(folder, NOTEBOOK_DIR)
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "mine.txt").write_text("the teacher's")
    with pytest.raises(FileExistsError, match="not empty and was not written by the grader"):
        grade(folder, tmp_path / "notes")
    assert (tmp_path / "notes" / "mine.txt").read_text() == "the teacher's"


@pytest.mark.parametrize("setting, message", [
    ({"exercise_timeout": 0}, "--exercise-timeout must be a positive number of seconds, got 0"),
    ({"exercise_timeout": -5.0}, "--exercise-timeout must be a positive"),
    ({"notebook_timeout": float("nan")}, "--notebook-timeout must be a positive"),
    ({"memory_mb": 0}, "--memory-mb must be a whole number of MiB of at least 1024"),
    ({"memory_mb": -1}, "--memory-mb must be"),
    ({"memory_mb": True}, "--memory-mb must be"),
    ({"exercise_ids": ["01.9"]}, "no exercise '01.9'"),
])
def test_bad_settings_are_refused_before_the_output_folder_is_touched(tmp_path, setting, message):
    with pytest.raises(ValueError, match=message):
        grade(hand_in(tmp_path / "in", "alice"), tmp_path / "grades", **setting)
    assert not (tmp_path / "grades").exists()


def test_the_command_line_refuses_bad_limits_with_a_message(tmp_path, capsys):
    from gloss_lite.course import classroom

    folder = hand_in(tmp_path / "in", "alice")
    assert classroom.main(["grade", str(folder), "--output", str(tmp_path / "g"), "--seed", "1",
                           "--memory-mb", "-3"]) == 2
    assert "--memory-mb must be" in capsys.readouterr().err and not (tmp_path / "g").exists()


def test_two_copies_of_one_notebook_by_one_student_are_refused_before_grading(tmp_path):
    folder = tmp_path / "in"
    hand_in(folder, "a/alice", "b/alice")
    with pytest.raises(ValueError, match=r"are both alice's notebook 01; nothing was graded"):
        grade(folder, tmp_path / "grades")
    assert not (tmp_path / "grades").exists()


def test_the_notebook_cannot_name_its_student(tmp_path):
    notebook = submission(change=delete_check)
    parameters = next(c for c in notebook["cells"] if "parameters" in c["metadata"].get("tags", []))
    claims = ['"alice"', '"x" * 300', '"../../etc/alice"', 'open("/etc/passwd").read()']
    for number, claim in enumerate(claims):
        parameters["source"] = [f"STUDENT_ID = {claim}\n"]
        hand_in(tmp_path / "in", f"mallory-{number}", notebook=notebook)
    grade(tmp_path / "in", tmp_path / "grades")
    assert [row[0] for row in rows(tmp_path / "grades")[1:]] == [f"mallory-{n}" for n in range(len(claims))]


def test_a_name_that_a_spreadsheet_would_run_is_written_as_text(tmp_path):
    grade(hand_in(tmp_path / "in", "=HYPERLINK(1)", "+1", "plain"), tmp_path / "grades")
    assert [row[0] for row in rows(tmp_path / "grades")[1:]] == ["'+1", "'=HYPERLINK(1)", "plain"]
    assert spreadsheet_safe("-2") == "'-2" and spreadsheet_safe("@x") == "'@x"


def test_feedback_files_never_collide_and_stay_inside_the_folder():
    names = ["a b", "a_b", "a/b", "." * 3, "x" * 300, "é", ""]
    files = [feedback_name(name) for name in names]
    assert len(set(files)) == len(files)
    assert all(f.startswith("feedback/") and "/" not in f[len("feedback/"):] and len(f) < 120 for f in files)
    assert feedback_name("alice") == "feedback/alice.md"


def test_a_full_disk_leaves_the_gradebook_as_it_was(tmp_path, monkeypatch):
    output = tmp_path / "grades"
    grade(hand_in(tmp_path / "first", "alice"), output)
    before = {p.relative_to(output): p.read_bytes() for p in output.rglob("*") if p.is_file()}
    calls = []

    def disk_full(fd):
        calls.append(fd)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(gradebook.os, "fsync", disk_full)
    with pytest.raises(OSError, match="No space left"):
        grade(hand_in(tmp_path / "late", "bob", "carol"), output)
    monkeypatch.undo()
    assert {p.relative_to(output): p.read_bytes() for p in output.rglob("*") if p.is_file()} == before
    grade(hand_in(tmp_path / "late", "bob", "carol"), output)  # the next run works
    assert [row[0] for row in rows(output)[1:]] == ["alice", "bob", "carol"]
