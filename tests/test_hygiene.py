"""The repository's own checks (the pre-commit hooks and `make lint`) pass on what is committed."""

import shutil
import subprocess
import sys
from pathlib import Path

from conftest import ROOT


def run(*command):
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True)


def test_ruff_finds_nothing_in_the_package_tests_scripts_and_notebooks():
    result = run(sys.executable, "-m", "ruff", "check", "--no-cache", ".")
    assert result.returncode == 0, result.stdout + result.stderr


def test_nbstripout_would_change_no_notebook():
    nbstripout = shutil.which("nbstripout", path=str(Path(sys.executable).parent))
    assert nbstripout, "nbstripout is part of the test extra: pip install -e '.[test]'"
    notebooks = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "notebooks").glob("*.ipynb"))
    result = run(nbstripout, "--verify", "--keep-id", *notebooks)
    assert result.returncode == 0, f"nbstripout would strip: {result.stdout}{result.stderr}"


def test_nbstripout_verify_catches_an_output(tmp_path):
    notebook = (ROOT / "notebooks" / "00_overview.ipynb").read_text(encoding="utf-8")
    dirty = tmp_path / "dirty.ipynb"
    dirty.write_text(notebook.replace('"outputs": []', '"outputs": [{"name": "stdout", "output_type": "stream", '
                                      '"text": ["hello\\n"]}]', 1), encoding="utf-8")
    nbstripout = shutil.which("nbstripout", path=str(Path(sys.executable).parent))
    assert run(nbstripout, "--verify", "--keep-id", str(dirty)).returncode != 0
