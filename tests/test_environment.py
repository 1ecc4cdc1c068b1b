"""environment.yml (for conda users) must list exactly what pyproject.toml installs."""

import tomllib

import yaml
from packaging.requirements import Requirement

from conftest import ROOT


def normalised(requirements):
    return {str(Requirement(r)).replace(" ", "").lower() for r in requirements}


def test_environment_yml_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = normalised(project["dependencies"] + project["optional-dependencies"]["test"])
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_sections = [item["pip"] for item in env["dependencies"] if isinstance(item, dict)]
    assert len(pip_sections) == 1, "environment.yml needs one pip: section"
    listed = [line for line in pip_sections[0] if not line.startswith("-e")]
    assert normalised(listed) == wanted
    assert "-e ." in pip_sections[0], "environment.yml must install the course package itself"
    assert "python=3.11" in env["dependencies"] and "pip" in env["dependencies"]


def test_torch_is_pinned_to_the_cpu_wheel_version():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert "torch==2.13.0" in project["dependencies"]
