"""The grader's output folder as a gradebook: ``grades.csv``, ``feedback/<student>.md`` and the grader's record.

Grades accumulate. The record (``.gloss-lite-grades.json``) holds every verdict the grader gave,
by student and notebook; ``grades.csv`` (one row per student: ``student``, one column per
exercise with its points, ``total``) and each student's feedback file are written from it. Grading
a late submission, or one student again, replaces that student's verdicts for the notebooks
graded (and only for the exercises graded) and rewrites that student's row and feedback file;
every other row and file stays as it was, and the log says whose row was replaced.

A teacher may edit ``grades.csv``: a row that differs from the one the grader wrote (or that
the teacher added or deleted) is the teacher's, and is kept as it is, run after run. Regrading a
student whose row or feedback file the teacher edited is refused before anything runs
(``GradebookError``), naming the student, as is a file whose columns were changed or that is not
UTF-8 CSV; a deleted row or a deleted ``grades.csv`` is simply written again.

Everything is written atomically: each file goes to a temporary file in its folder first and is
renamed into place only when all are written, so a full disk or a stopped run leaves the folder
as it was. The grader writes only into a folder that is empty or that holds its record, and only
the files its record names; a record that is not one it wrote (a list, a path outside the folder)
is refused. Spreadsheet programs read a cell that starts with ``=``, ``+``, ``-`` or ``@`` as a
formula: such a student name is written with a leading ``'``.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
import tempfile
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..files import UMASK, write_atomically

RECORD = ".gloss-lite-grades.json"
GRADES = "grades.csv"
FORMAT = 2
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
VERDICT_FIELDS = {"exercise": str, "points": (int, float), "out_of": int, "status": str, "message": str, "hint": str}


@dataclass
class Verdict:
    """The grade of one exercise of one submission."""

    exercise: str
    points: float
    out_of: int
    status: str  # "passed", "not yet", "not attempted", "time limit", "uses the reference implementation", ...
    message: str = ""
    hint: str = ""

    @property
    def passed(self) -> bool:
        return self.status == "passed"


@dataclass
class Graded:
    """One submitted notebook, graded."""

    path: Path
    student: str
    notebook: str  # the notebook's number, "01"
    verdicts: list[Verdict] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def points(self) -> float:
        return round(sum(v.points for v in self.verdicts), 2)

    @property
    def out_of(self) -> int:
        return sum(v.out_of for v in self.verdicts)


class GradebookError(ValueError):
    """An output folder, record or edited file that the grader will not write over; the message says
    what to do."""


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def spreadsheet_safe(text: str) -> str:
    """``text`` as a CSV cell that a spreadsheet shows as text, never runs as a formula."""
    return "'" + text if text.startswith(FORMULA_START) else text


def feedback_name(student: str) -> str:
    """``feedback/<name>.md`` for a student: the name itself when it is a plain file name, else a plain
    version of it with a checksum, so two students never share a file."""
    plain = re.sub(r"[^\w.-]", "_", student).strip("._")[:80]
    if plain == student and plain:
        return f"feedback/{plain}.md"
    return f"feedback/{plain or 'student'}-{zlib.crc32(student.encode('utf-8')):08x}.md"


# ---------------------------------------------------------------------------------------------
# The record
# ---------------------------------------------------------------------------------------------

def _problem(record) -> str | None:
    """What makes ``record`` not one the grader wrote, or None."""
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        return "it is not a record of this grader's format"
    files, students = record.get("files"), record.get("students")
    if not isinstance(files, dict) or not isinstance(students, dict) or not isinstance(record.get("rows"), dict):
        return "its files, students or rows are missing"
    for name, digests in files.items():
        parts = Path(name).parts if isinstance(name, str) else ("..",)
        if Path(name).is_absolute() or ".." in parts or not parts or not isinstance(digests, list):
            return f"it names {name!r}, which is not a file inside the folder"
    for notebooks in students.values():
        if not isinstance(notebooks, dict):
            return "a student's entry is not a mapping"
        for entry in notebooks.values():
            if not isinstance(entry, dict) or not isinstance(entry.get("verdicts"), list):
                return "a notebook's entry holds no list of verdicts"
            for verdict in entry["verdicts"]:
                if not isinstance(verdict, dict) or any(not isinstance(verdict.get(k), t)
                                                        for k, t in VERDICT_FIELDS.items()):
                    return "a verdict is not one the grader wrote"
    return None


def _csv_text(header: list[str], rows: list[list[str]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue()


class Gradebook:
    """The output folder of a grading run: check it (``open``), add graded notebooks (``add``), ``write``."""

    def __init__(self, folder: Path, record: dict, created: bool) -> None:
        self.folder, self.record, self.created = folder, record, created
        self.teacher_rows: dict[str, list[str] | None] = {}  # rows the teacher edited (None: deleted)
        self.header: list[str] = record.get("header", [])
        self.changed: set[str] = set()

    # -- opening ---------------------------------------------------------------------------

    @classmethod
    def open(cls, folder: Path, protected: list[Path]) -> Gradebook:
        """Check that ``folder`` is the grader's to write (creating it if need be) and read its record.

        ``protected``: folders it must not be (they hold notebooks). Raises ``GradebookError``.
        """
        folder = Path(folder)
        resolved = folder.resolve()
        if any(resolved == Path(p).resolve() for p in protected):
            raise GradebookError(f"{folder} holds notebooks (the course's or the submissions'); write the grades "
                                 f"into a folder of their own, e.g. --output grades")
        if folder.exists() and not folder.is_dir():
            raise GradebookError(f"--output {folder} is a file; give a folder for grades.csv and feedback/")
        created = not folder.exists()
        try:
            folder.mkdir(parents=True, exist_ok=True)
            handle, probe = tempfile.mkstemp(dir=folder, prefix=".gloss-lite-probe-")
            os.close(handle)
            os.unlink(probe)
        except OSError as error:
            raise GradebookError(f"cannot write into --output {folder} ({error.strerror or error}); choose a folder "
                                 f"you can write to") from None
        record_path = folder / RECORD
        if not record_path.exists():
            if any(p.name != RECORD for p in folder.iterdir()):
                raise FileExistsError(f"{folder} is not empty and was not written by the grader; choose an empty or "
                                     f"new folder for --output")
            record = {"format": FORMAT, "files": {}, "students": {}, "rows": {}, "header": []}
        else:
            try:
                record = json.loads(record_path.read_text(encoding="utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError):
                record = None
            problem = _problem(record)
            if problem:
                raise GradebookError(f"{record_path} is not the grader's record ({problem}); the grader writes only "
                                     f"into a folder it wrote itself: choose another --output")
        book = cls(folder, record, created)
        book._read_teacher_edits()
        return book

    def _ours(self, name: str) -> bool:
        """Whether the file ``name`` is as the grader wrote it (or absent)."""
        path = self.folder / name
        return not path.exists() or digest(path.read_bytes()) in self.record["files"].get(name, [])

    def _read_teacher_edits(self) -> None:
        """The rows of ``grades.csv`` that differ from the ones the grader wrote (a teacher's edits); a
        deleted ``grades.csv`` is written again from the record."""
        path = self.folder / GRADES
        if not path.exists():
            return
        try:
            rows = list(csv.reader(io.StringIO(path.read_bytes().decode("utf-8"), newline="")))
        except (UnicodeDecodeError, csv.Error) as error:
            raise GradebookError(f"{path} was changed and cannot be read as UTF-8 CSV ({error}); save it as "
                                 f"UTF-8 CSV, or move it away to let the grader write it again") from None
        if not rows or rows[0] != self.header:
            raise GradebookError(f"the columns of {path} were changed since the grader wrote it; keep your own "
                                 f"columns in another file and restore grades.csv (or move it away)")
        current = {row[0]: row for row in rows[1:] if row}
        written = self.record["rows"]
        self.teacher_rows = {student: row for student, row in current.items() if written.get(student) != row}
        self.teacher_rows |= {student: None for student in written if student not in current}

    def refuse_edited(self, students: set[str]) -> None:
        """``GradebookError`` if the teacher edited the row or feedback file of a student about to be graded."""
        rows = sorted(s for s in students if self.teacher_rows.get(spreadsheet_safe(s)) is not None)
        files = sorted(s for s in students if not self._ours(feedback_name(s)))
        if rows or files:
            raise GradebookError(
                "nothing was graded: " + "; ".join(filter(None, [
                    rows and f"grades.csv holds your edits to the row(s) of {', '.join(rows)}",
                    files and f"the feedback of {', '.join(files)} was edited"]))
                + ". Grading them again would replace those edits: copy your edits elsewhere (or delete the row "
                  "or file to let the grader write it again), then run again")

    # -- adding verdicts -------------------------------------------------------------------

    def add(self, graded: Graded) -> str | None:
        """Record ``graded``; returns a sentence when it replaces verdicts the gradebook held before."""
        notebooks = self.record["students"].setdefault(graded.student, {})
        before = notebooks.get(graded.notebook)
        old = {v["exercise"]: v for v in (before or {}).get("verdicts", [])}
        total_before = self.total(graded.student)
        new = {v.exercise: asdict(v) for v in graded.verdicts}
        notebooks[graded.notebook] = {"file": graded.path.name, "verdicts": list({**old, **new}.values())}
        self.changed.add(graded.student)
        if before is None:
            return None
        return (f"{graded.student}: notebook {graded.notebook} graded again; the row of {graded.student} in "
                f"grades.csv is replaced ({total_before:g} -> {self.total(graded.student):g} points)")

    def verdicts(self, student: str) -> list[Verdict]:
        return [Verdict(**v) for _, entry in sorted(self.record["students"].get(student, {}).items())
                for v in entry["verdicts"]]

    def total(self, student: str) -> float:
        return round(sum(v.points for v in self.verdicts(student)), 2)

    # -- writing ---------------------------------------------------------------------------

    def _grades(self, order: list[str]) -> str:
        columns = [i for i in order if any(v.exercise == i for s in self.record["students"] for v in self.verdicts(s))]
        columns += sorted({v.exercise for s in self.record["students"] for v in self.verdicts(s)} - set(columns))
        self.header, rows, written = ["student", *columns, "total"], [], {}
        for student in sorted(self.record["students"]):
            points = {v.exercise: v.points for v in self.verdicts(student)}
            row = [spreadsheet_safe(student), *(f"{points[i]:g}" if i in points else "" for i in columns),
                   f"{self.total(student):g}"]
            written[row[0]] = row
        graded_now = {spreadsheet_safe(student) for student in self.changed}
        for name in sorted(set(written) | set(self.teacher_rows)):
            if name in self.teacher_rows and name not in graded_now:  # the teacher's row, as the teacher left it
                kept = self.teacher_rows[name]
                if kept is not None:
                    mapped = dict(zip(self.record["header"], kept))
                    rows.append([mapped.get(column, "") for column in self.header])
            else:
                rows.append(written[name])
        self.record["rows"], self.record["header"] = written, self.header
        return _csv_text(self.header, rows)

    def write(self, feedback, order: list[str]) -> list[Path]:
        """Write ``grades.csv``, the feedback of every student added since ``open`` (``feedback(student,
        verdicts_by_notebook)`` gives its text) and the record, atomically; returns the files written."""
        files = {GRADES: self._grades(order).encode("utf-8")}
        for student in sorted(self.changed):
            files[feedback_name(student)] = feedback(student, self.record["students"][student]).encode("utf-8")
        (self.folder / "feedback").mkdir(exist_ok=True)
        staged = {}
        try:
            for name, data in files.items():
                handle, temporary = tempfile.mkstemp(dir=(self.folder / name).parent, prefix=".gloss-lite-")
                staged[name] = temporary
                os.chmod(temporary, 0o666 & ~UMASK)
                with os.fdopen(handle, "wb") as out:
                    out.write(data)
                    out.flush()
                    os.fsync(out.fileno())
            known = self.record["files"]
            self._write_record({**known, **{n: [*known.get(n, []), digest(d)] for n, d in files.items()}})
            for name, temporary in staged.items():
                os.replace(temporary, self.folder / name)
            staged = {}
            self._write_record({**known, **{n: [digest(d)] for n, d in files.items()}})
        finally:
            for temporary in staged.values():
                Path(temporary).unlink(missing_ok=True)
        return [self.folder / name for name in files]

    def _write_record(self, files: dict) -> None:
        self.record["files"] = files
        self.record["written by"] = "python -m gloss_lite.course.classroom grade"
        write_atomically(self.folder / RECORD, (json.dumps(self.record, indent=1) + "\n").encode("utf-8"))

    def discard(self) -> None:
        """Remove the folder if ``open`` created it and nothing was written there."""
        if self.created and not any(self.folder.iterdir()):
            self.folder.rmdir()
