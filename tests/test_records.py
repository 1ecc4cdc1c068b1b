import json

import pytest

from gloss_lite.course.records import MIME_TYPE, read_records, record


def test_read_records_collects_values_from_outputs(tmp_path):
    notebook = {
        "cells": [
            {"cell_type": "markdown", "source": "hi"},
            {"cell_type": "code", "outputs": [{"output_type": "display_data", "data": {MIME_TYPE: {"a": 1.5}}}]},
            {"cell_type": "code", "outputs": [
                {"output_type": "stream", "text": "x"},
                {"output_type": "display_data", "data": {MIME_TYPE: {"b": True}, "text/plain": "b = True"}},
            ]},
        ]
    }
    path = tmp_path / "nb.ipynb"
    path.write_text(json.dumps(notebook))
    assert read_records(path) == {"a": 1.5, "b": True}
    assert read_records(notebook) == {"a": 1.5, "b": True}


def test_record_outside_a_notebook_prints(capsys):
    record("accuracy", 0.912345678)
    assert "accuracy = 0.912346" in capsys.readouterr().out


def test_record_refuses_containers():
    with pytest.raises(ValueError, match="must be a number, bool or string"):
        record("x", [1, 2])



def test_record_in_a_notebook_stores_the_value_and_shows_nothing(tmp_path):
    """A real kernel runs ``record``; its output holds the record's MIME type and no text to show."""
    import nbclient
    import nbformat

    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_code_cell("from gloss_lite.course.records import record\n"
                                                "record('accuracy', 0.912345678)\nrecord('name', 'mr')")]
    executed = nbclient.NotebookClient(notebook, timeout=120, kernel_name="python3").execute()
    outputs = executed.cells[0].outputs
    assert [set(output["data"]) for output in outputs] == [{MIME_TYPE}, {MIME_TYPE}]
    assert not [o for o in outputs if o["output_type"] == "stream"], "nothing printed"
    assert read_records(executed) == {"accuracy": 0.912345678, "name": "mr"}
