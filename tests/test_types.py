"""The public API type-checks clean with mypy, under the settings of pyproject.toml's [tool.mypy]."""

import importlib.util
import re
import subprocess
import sys

import pytest
import tomllib

from conftest import ROOT

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("mypy") is None,
    reason="mypy is not installed; it is part of the test extra: pip install -e '.[test]'",
)


def mypy(*arguments):
    return subprocess.run([sys.executable, "-m", "mypy", *arguments], cwd=ROOT, capture_output=True, text=True)


def test_mypy_finds_nothing_in_the_public_api():
    result = mypy()
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_check_covers_every_module_of_the_package_but_the_course_tooling():
    settings = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["mypy"]
    modules = sorted(path.relative_to(ROOT).as_posix() for path in (ROOT / "gloss_lite").rglob("*.py"))

    def checked(module):
        listed = any(module == name or module.startswith(name.rstrip("/") + "/") for name in settings["files"])
        return listed and not any(re.search(pattern, module) for pattern in settings.get("exclude", []))

    left_out = [module for module in modules if not checked(module)]
    assert left_out == [module for module in modules if module.startswith("gloss_lite/course/")]
    assert "gloss_lite/training/loop.py" in modules and "gloss_lite/reproduction/run.py" in modules
    assert (settings["python_version"], settings["follow_imports"]) == ("3.10", "silent")


def test_the_settings_report_a_wrong_annotation(tmp_path):
    wrong = tmp_path / "wrong.py"
    wrong.write_text('def halve(x: int) -> int:\n    return x / 2\n\n\ncount: int = "three"\n', encoding="utf-8")
    result = mypy("--config-file", str(ROOT / "pyproject.toml"), "--no-incremental", str(wrong))
    assert result.returncode == 1, result.stdout + result.stderr
    assert "wrong.py:2: error: Incompatible return value type" in result.stdout, result.stdout
    assert "wrong.py:5: error: Incompatible types in assignment" in result.stdout, result.stdout
