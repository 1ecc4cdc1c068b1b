"""Test-wide settings and fixtures: quiet progress bars, the repository root, the executed notebooks."""

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Kernels started by the tests (nbclient, papermill) make no widgets: they can stall the client.
os.environ.setdefault("GLOSS_LITE_NO_WIDGETS", "1")

ROOT = Path(__file__).resolve().parents[1]
# The course runs offline by default; a Hub lookup in a test would only wait for time-outs.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

SMOKE_CELL_TIMEOUT = 300  # seconds for any one cell under smoke parameters


@pytest.fixture(scope="session")
def executed_notebook(tmp_path_factory):
    """``executed_notebook(path)``: the copy of a course notebook executed with its smoke parameters.

    Each notebook runs at most once per pytest run, the first time a test asks for it, into one
    temporary folder; the notebook tests and the site test share the copies. A run that failed
    raises its error again for every test that asks.
    """
    from gloss_lite.course.run import course_metadata, run_notebook

    folder = tmp_path_factory.mktemp("executed_notebooks")
    runs = {}

    def executed(path: Path) -> Path:
        if path.name not in runs:
            try:
                runs[path.name] = run_notebook(path, folder, parameters=course_metadata(path)["smoke_parameters"],
                                               cell_timeout=SMOKE_CELL_TIMEOUT)
            except Exception as error:  # kept, and raised again for every test that asks
                runs[path.name] = error
        if isinstance(runs[path.name], Exception):
            raise runs[path.name]
        return runs[path.name]

    return executed
