"""The install is pinned in one story: pyproject.toml declares ranges, constraints.txt pins the
course's environment exactly inside them, and the Makefile's install, environment.yml (for conda
users), CI and the pre-commit hooks agree. A resolution beside the newest sentence-transformers and
optuna shows that the package installs next to what users already have."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import tomllib
import yaml
from packaging.requirements import Requirement

from conftest import ROOT


def normalised(requirements):
    return {str(Requirement(r)).replace(" ", "").lower() for r in requirements}


def project():
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def makefile_torch_pin():
    found = re.findall(r"^TORCH\s*:=\s*(\S+)\s*$", (ROOT / "Makefile").read_text(), re.M)
    assert len(found) == 1, "the Makefile must set TORCH := torch==<version> once"
    return found[0]


def test_torch_is_a_floor_in_the_package_and_pinned_at_install():
    (torch,) = [Requirement(r) for r in project()["dependencies"] if Requirement(r).name == "torch"]
    assert all(spec.operator == ">=" for spec in torch.specifier), (
        "pyproject.toml must only put a floor on torch, so that installing the course in Colab keeps Colab's torch"
    )
    pin = Requirement(makefile_torch_pin())
    assert pin.name == "torch" and str(pin.specifier) == "==2.13.0"
    assert torch.specifier.contains("2.13.0"), "the pinned torch must satisfy the package's floor"


def test_environment_yml_matches_pyproject_and_the_torch_pin():
    wanted = normalised(
        [r for r in project()["dependencies"] if Requirement(r).name != "torch"]
        + project()["optional-dependencies"]["course"]
        + project()["optional-dependencies"]["test"]
        + project()["optional-dependencies"]["site"]
        + project()["optional-dependencies"]["integrations"]
        + [makefile_torch_pin()]
    )
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_sections = [item["pip"] for item in env["dependencies"] if isinstance(item, dict)]
    assert len(pip_sections) == 1, "environment.yml needs one pip: section"
    listed = [line for line in pip_sections[0] if not line.startswith(("-e", "-c"))]
    assert normalised(listed) == wanted
    assert "-e ." in pip_sections[0], "environment.yml must install the course package itself"
    assert "-c constraints.txt" in pip_sections[0], "environment.yml must pin through constraints.txt"
    assert "python=3.11" in env["dependencies"] and "pip" in env["dependencies"]


NOTEBOOK_TOOLS = {"jupyterlab", "papermill", "ipykernel", "ipywidgets", "notebook", "jupyter-client", "tornado"}


def test_the_package_leaves_colabs_kernel_packages_alone():
    core = {Requirement(r).name.lower(): Requirement(r) for r in project()["dependencies"]}
    assert not NOTEBOOK_TOOLS & set(core), "notebook tools belong in the `course` extra, not the package's needs"
    assert {"papermill", "jupyterlab", "ipykernel"} <= {Requirement(r).name for r in
                                                      project()["optional-dependencies"]["course"]}
    assert all(spec.operator != "==" for spec in core["transformers"].specifier), "transformers as a range"


def test_the_makefile_installs_the_course_extra_with_torch_in_one_pip_command():
    installs = [line for line in (ROOT / "Makefile").read_text().splitlines() if "pip install" in line
                and "--upgrade pip" not in line]
    assert len(installs) == 1 and '".[course,test,site,integrations]"' in installs[0] \
        and '"$(TORCH)"' in installs[0] and "--constraint constraints.txt" in installs[0], installs


def test_every_subpackage_ships():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(path.parent.relative_to(ROOT).parts) for path in (ROOT / "gloss_lite").rglob("__init__.py")}
    assert found <= listed, f"pyproject.toml's packages miss {sorted(found - listed)}: a pip install would lack them"


def test_the_course_dataset_ships_inside_the_package():
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert setuptools["package-dir"]["gloss_lite.course_data"] == "data"
    shipped = set()
    for package, patterns in setuptools["package-data"].items():
        if package == "gloss_lite.course_data" or package.startswith("gloss_lite.course_data."):
            assert package in setuptools["packages"], f"{package} ships data, so it must be a listed package"
            folder = ROOT / "data" / package.removeprefix("gloss_lite.course_data").lstrip(".").replace(".", "/")
            shipped |= {path.relative_to(ROOT / "data") for pattern in patterns for path in folder.glob(pattern)}
    assert {f"{name}/{split}.csv" for name in ("reviews_topic", "reviews_sentiment")
            for split in ("train", "val", "test")} <= {str(path) for path in shipped}


def test_pre_commit_hooks_use_the_pinned_tools():
    config = yaml.safe_load((ROOT / ".pre-commit-config.yaml").read_text())
    hooks = {hook["id"]: hook for repo in config["repos"] for hook in repo["hooks"]}
    assert {"nbstripout", "ruff"} <= set(hooks)
    pins = normalised(project()["optional-dependencies"]["test"])
    for name in ("nbstripout", "ruff"):
        assert normalised(hooks[name]["additional_dependencies"]) <= pins, f"{name}'s hook and pyproject disagree"
    assert "--keep-id" in hooks["nbstripout"]["entry"], "nbstripout must keep the cell ids"


INSTALLED_EXTRAS = ("course", "test", "site", "integrations")  # what the Makefile installs


def all_requirements():
    extras = project()["optional-dependencies"]
    return [Requirement(r) for r in project()["dependencies"] + [r for name in INSTALLED_EXTRAS for r in extras[name]]]


def constraint_pins():
    lines = [line.split("#")[0].strip() for line in (ROOT / "constraints.txt").read_text().splitlines()]
    pins = [Requirement(line) for line in lines if line]
    assert all(len(pin.specifier) == 1 and next(iter(pin.specifier)).operator == "==" for pin in pins), \
        "constraints.txt pins exactly (name==version), one package a line"
    return {pin.name.lower().replace("_", "-"): next(iter(pin.specifier)).version for pin in pins}


def test_the_package_declares_ranges_and_the_course_pins_them_exactly_inside():
    pins = constraint_pins()
    for requirement in all_requirements():
        if requirement.marker is not None and not requirement.marker.evaluate():
            continue  # e.g. the website's tools, for Python 3.11+ only
        name = requirement.name.lower()
        assert name in pins, f"constraints.txt does not pin {name}"
        assert requirement.specifier.contains(pins[name], prereleases=True), \
            f"constraints.txt pins {name}=={pins[name]}, outside the declared {requirement.specifier}"
    library = [Requirement(r) for r in project()["dependencies"] + project()["optional-dependencies"]["integrations"]]
    exact = [str(r) for r in library if any(spec.operator == "==" for spec in r.specifier)]
    assert not exact, f"the package's own needs must be ranges, not exact pins: {exact}"
    assert pins["torch"] == makefile_torch_pin().split("==")[1]


def pypi_reachable():
    result = subprocess.run([sys.executable, "-m", "pip", "index", "versions", "sentence-transformers"],
                            capture_output=True, text=True, timeout=60)
    return result.returncode == 0 and "6.3.0" in result.stdout


def test_the_package_installs_beside_the_newest_sentence_transformers_and_optuna(tmp_path):
    """pip resolves the package with its integrations beside sentence-transformers 6.3.0, optuna 5.1.0
    and accelerate 1.16.0 without downgrading them (a dry run: metadata only; needs PyPI)."""
    import pytest

    if not pypi_reachable():
        pytest.skip("PyPI is not reachable: the resolution needs the packages' metadata")
    wanted = {"sentence-transformers": "6.3.0", "optuna": "5.1.0", "accelerate": "1.16.0"}
    report = tmp_path / "report.json"
    command = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet", "--report",
               str(report), f"{ROOT}[integrations]", makefile_torch_pin(),  # torch pinned in the same command
               *(f"{name}=={version}" for name, version in wanted.items())]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    chosen = {item["metadata"]["name"].lower(): item["metadata"]["version"]
              for item in json.loads(report.read_text())["install"]}
    assert {name: chosen[name] for name in wanted} == wanted
    from gloss_lite import __version__

    assert chosen["gloss-lite"] == __version__


def colab_like_environment(folder):
    """A fresh venv that already holds the course's packages but not gloss-lite, as Colab holds its own."""
    import sysconfig
    import venv

    shelf = folder / "preinstalled"
    shelf.mkdir()
    site = sysconfig.get_paths()["purelib"]
    for entry in os.listdir(site):
        if not entry.lower().startswith(("gloss_lite", "gloss-lite", "__editable__")) and not entry.endswith(".pth"):
            (shelf / entry).symlink_to(os.path.join(site, entry))
    venv.EnvBuilder(with_pip=False).create(folder / "venv")
    python = folder / "venv" / "bin" / "python"
    target = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                            capture_output=True, text=True, check=True).stdout.strip()
    (Path(target) / "preinstalled.pth").write_text(f"{shelf}\n")
    return python


def test_the_colab_cell_installs_the_released_tag_and_says_what_to_do_without_it(tmp_path):
    """The release step tags a clone; notebook 08's set-up cell, run as in Colab, installs from that tag
    what 08 imports, and a missing tag stops it with the way out."""
    import pytest

    from gloss_lite import __version__
    from gloss_lite.course import classroom, colab

    if not pypi_reachable():
        pytest.skip("PyPI is not reachable: building the package from the tag needs setuptools")
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True)
    for name in ("user.name", "user.email"):
        subprocess.run(["git", "-C", str(clone), "config", name, "course"], check=True)
    released = subprocess.run([sys.executable, "-m", "gloss_lite.course.classroom", "release"], cwd=clone,
                              capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(clone)})
    assert released.returncode == 0, released.stderr
    assert f"v{__version__}" in subprocess.run(["git", "-C", str(clone), "tag"], capture_output=True,
                                                 text=True).stdout.split()
    python = colab_like_environment(tmp_path)
    notebook = classroom.read_notebook(ROOT / "notebooks" / "08_the_graph_beyond_one_batch.ipynb")
    cell = colab.setup_source(f"file://{clone}", extras=colab.notebook_extras(notebook))
    assert classroom.cell_source(notebook["cells"][0]) == colab.setup_source(
        colab.repository_url(), extras="[integrations]")  # the committed cell is this one, for the README's URL
    as_colab = ("import sys, types; sys.modules['google.colab'] = types.ModuleType('google.colab'); "
                "exec(open(sys.argv[1]).read())")
    (tmp_path / "cell.py").write_text(cell)
    run = subprocess.run([str(python), "-c", as_colab, str(tmp_path / "cell.py")], cwd=tmp_path,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    imports = "import gloss_lite, gloss_lite.integrations, sentence_transformers; print(gloss_lite.__version__)"
    check = subprocess.run([str(python), "-c", imports], cwd=tmp_path, capture_output=True, text=True)
    assert check.returncode == 0 and check.stdout.strip() == __version__, check.stderr[-2000:]
    (tmp_path / "missing.py").write_text(cell.replace(f'TAG = "v{__version__}"', 'TAG = "v99.0.0"'))
    missing = subprocess.run([str(python), "-c", as_colab, str(tmp_path / "missing.py")], cwd=tmp_path,
                             capture_output=True, text=True, timeout=600)
    assert missing.returncode != 0
    assert "the instructor runs `python -m gloss_lite.course.classroom release`" in missing.stderr
    assert "set TAG = 'main'" in missing.stderr


def test_public_modules_declare_what_they_export_and_the_package_is_typed():
    """``__all__`` in every module of the method, training, integrations and reproduction, listing each
    public function, class and constant the module defines (so that it cannot drift); ``py.typed``."""
    import ast

    for path in sorted((ROOT / "gloss_lite").rglob("*.py")):
        if "course" in path.parts or path.name in ("__init__.py", "__main__.py"):
            continue
        tree = ast.parse(path.read_text())
        declared = [node for node in tree.body if isinstance(node, ast.Assign)
                    and any(isinstance(target, ast.Name) and target.id == "__all__" for target in node.targets)]
        assert len(declared) == 1, f"{path.relative_to(ROOT)} declares no __all__"
        listed = set(ast.literal_eval(declared[0].value))
        defined = {node.name for node in tree.body if isinstance(node, (ast.FunctionDef, ast.ClassDef))
                   and not node.name.startswith("_")}
        assert defined <= listed, f"{path.relative_to(ROOT)}: __all__ misses {sorted(defined - listed)}"
    assert (ROOT / "gloss_lite" / "py.typed").is_file()
    package_data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    assert "py.typed" in package_data["gloss_lite"]
