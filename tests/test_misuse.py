"""The course runner under misuse: nothing is lost, and every refusal names the problem and the fix."""

import json

import nbformat
import pytest

from gloss_lite.course import run as course
from gloss_lite.course.run import CourseError, declared_parameters, main, run_notebook


def write_notebook(folder, name="00_tiny.ipynb", parameters="MAX_TRAIN = 120\nDATASET = 'reviews_sentiment'\n"):
    notebook = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell(parameters)
    cell.metadata["tags"] = ["parameters"]
    notebook.cells = [cell, nbformat.v4.new_code_cell("result = MAX_TRAIN * 2")]
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(nbformat.writes(notebook), encoding="utf-8")
    return path


def snapshot(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_declared_parameters_are_the_names_of_the_parameters_cell(tmp_path):
    path = write_notebook(tmp_path)
    assert declared_parameters(path) == {"MAX_TRAIN": 120, "DATASET": "reviews_sentiment"}
    assert set(declared_parameters(course.notebook_paths()[0]))  # the real notebooks declare some


def test_a_misspelt_parameter_is_an_error_naming_the_declared_ones(tmp_path):
    path = write_notebook(tmp_path / "src")
    with pytest.raises(CourseError, match=r"declares no parameter\(s\) \['MAXTRAIN'\] \(did you mean 'MAX_TRAIN' for "
                                          r"'MAXTRAIN'\?\); its parameters are DATASET, MAX_TRAIN"):
        run_notebook(path, tmp_path / "out", parameters={"MAXTRAIN": 50})
    assert not (tmp_path / "out").exists()  # refused before anything was written


def test_a_notebook_without_a_parameters_cell_takes_no_parameters(tmp_path):
    path = write_notebook(tmp_path, parameters="x = 1")
    notebook = json.loads(path.read_text())
    notebook["cells"][0]["metadata"]["tags"] = []
    path.write_text(json.dumps(notebook))
    with pytest.raises(CourseError, match="has no cell tagged 'parameters'"):
        run_notebook(path, tmp_path / "out", parameters={"x": 2})


@pytest.mark.parametrize("timeout", [0, -5, True, "600"])
def test_a_cell_timeout_that_is_not_a_positive_number_is_refused(tmp_path, timeout):
    path = write_notebook(tmp_path / "src")
    with pytest.raises(CourseError, match=r"cell_timeout must be a positive number of seconds.*None"):
        run_notebook(path, tmp_path / "out", cell_timeout=timeout)


def test_the_source_folder_is_refused_as_output_and_survives(tmp_path):
    path = write_notebook(tmp_path / "src")
    before = snapshot(tmp_path / "src")
    with pytest.raises(CourseError, match=r"refusing to write into .*src: it holds the source notebooks"):
        run_notebook(path, tmp_path / "src")
    assert snapshot(tmp_path / "src") == before


def test_course_output_notebooks_is_refused_and_the_instructor_notebooks_survive(capsys):
    before = snapshot(course.NOTEBOOK_DIR)
    assert main(["--smoke", "--output", str(course.NOTEBOOK_DIR)]) == 2
    error = capsys.readouterr().err
    assert "Nothing was run" in error and "it holds the source notebooks" in error
    assert snapshot(course.NOTEBOOK_DIR) == before


def test_an_executed_copy_is_rewritten_but_a_file_the_runner_did_not_write_is_not(tmp_path):
    path = write_notebook(tmp_path / "src")
    out = tmp_path / "out"
    executed = run_notebook(path, out, parameters={"MAX_TRAIN": 5}, cell_timeout=60)
    assert json.loads(executed.read_text())["metadata"]["papermill"]["parameters"] == {"MAX_TRAIN": 5}
    run_notebook(path, out, cell_timeout=60)  # its own earlier output: rewritten
    foreign = out / "01_mine.ipynb"
    other = write_notebook(tmp_path / "src", "01_mine.ipynb")
    foreign.write_text("a student's graded work", encoding="utf-8")
    with pytest.raises(CourseError, match=r"refusing to overwrite .*01_mine.ipynb: it is not an executed copy"):
        run_notebook(other, out)
    assert foreign.read_text(encoding="utf-8") == "a student's graded work"


def test_a_copy_of_the_sources_in_the_output_folder_is_not_overwritten(tmp_path, capsys):
    source = write_notebook(tmp_path / "src")
    copy = tmp_path / "out" / source.name
    copy.parent.mkdir()
    copy.write_bytes(source.read_bytes())
    assert main(["--output", str(tmp_path / "out"), str(source)]) == 2
    assert f"refusing to overwrite {copy}" in capsys.readouterr().err
    assert copy.read_bytes() == source.read_bytes()


def test_unknown_and_non_notebook_paths_stop_the_run_before_it_starts(tmp_path, capsys):
    good = write_notebook(tmp_path / "src")
    text = tmp_path / "notes.txt"
    text.write_text("not a notebook")
    broken = tmp_path / "02_broken.ipynb"
    broken.write_text("{ not json")
    code = main(["--output", str(tmp_path / "out"), str(good), str(tmp_path / "07_missing.ipynb"), str(text),
                 str(broken)])
    error = capsys.readouterr().err
    assert code == 2 and "Traceback" not in error
    assert "07_missing.ipynb: no such notebook (the course notebooks: 00_overview.ipynb" in error
    assert "notes.txt: not a notebook (.ipynb file)" in error
    assert "02_broken.ipynb: not notebook JSON" in error
    assert not (tmp_path / "out").exists()


def test_a_misspelt_command_line_parameter_stops_the_run(tmp_path, capsys):
    path = write_notebook(tmp_path / "src")
    assert main(["--output", str(tmp_path / "out"), "-p", "MAXTRAIN", "50", str(path)]) == 2
    error = capsys.readouterr().err
    assert "no notebook run declares the parameter 'MAXTRAIN' (did you mean 'MAX_TRAIN'?)" in error
    assert not (tmp_path / "out").exists()


def test_cell_timeout_zero_is_refused_on_the_command_line(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--cell-timeout", "0"])
    assert exit_info.value.code == 2
    assert "the limit must be a positive number of seconds" in capsys.readouterr().err


def test_two_notebooks_of_one_name_for_one_output_are_refused_before_anything_runs(tmp_path, capsys):
    first, second = write_notebook(tmp_path / "a"), write_notebook(tmp_path / "b")
    assert main(["--output", str(tmp_path / "out"), str(first), str(second)]) == 2
    error = capsys.readouterr().err
    assert f"{first} and {second} would both be written to {tmp_path / 'out' / first.name}" in error
    assert not (tmp_path / "out").exists()


def test_a_run_stopped_part_way_leaves_no_copy_that_looks_executed(tmp_path, monkeypatch):
    import papermill

    path = write_notebook(tmp_path / "src")

    def interrupted(source, output, **settings):  # papermill saves as it goes, then the run is stopped
        notebook = json.loads(open(source).read())
        notebook["metadata"]["papermill"] = {"output_path": output, "end_time": "2025-01-01T00:00:00",
                                             "exception": None}
        open(output, "w").write(json.dumps(notebook))
        raise KeyboardInterrupt

    monkeypatch.setattr(papermill, "execute_notebook", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_notebook(path, tmp_path / "out", cell_timeout=60)
    assert [p.name for p in (tmp_path / "out").iterdir()] == [f".{path.stem}.partial.ipynb"]
