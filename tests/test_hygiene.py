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


PLACEHOLDER = r"\bRT_?[A-Z0-9]{2,}\b|\bTODO\b|\bTBD\b|\bXXX\b"


def placeholders(text: str) -> list[str]:
    import re

    return re.findall(PLACEHOLDER, text)


def test_no_placeholder_is_left_in_what_students_and_teachers_read():
    import json

    texts = {"README.md": (ROOT / "README.md").read_text(encoding="utf-8")}
    texts.update({f"site/{p.name}": p.read_text(encoding="utf-8") for p in (ROOT / "site").glob("*.md")})
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
        texts[path.name] = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown")
    left = {name: found for name, text in texts.items() if (found := placeholders(text))}
    assert not left, f"placeholders left in the text: {left}"
    assert placeholders("| 03 | ... | RT03 |, run time RT_TRAIN") == ["RT03", "RT_TRAIN"]
