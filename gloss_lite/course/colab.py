"""Colab: the badge under every notebook's title and the set-up cell that installs the course there.

The README names the repository once, as the link definition ``[repository]: URL``.
``sync_colab`` derives everything else from it: the first cell of every notebook (installs this
version of the package in Colab from the tag ``v<version>``, with the ``integrations`` extra where
the notebook imports it, and says what to do when the tag is missing; does nothing elsewhere), the
badge under every notebook's title, and the badges in the README. ``colab_problems`` lists what is
out of step (the tests call it). ``release`` checks the cells and makes the tag they install
from. The commands are ``python -m gloss_lite.course.classroom colab [--check]`` and ``... release``.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path

from .. import __version__
from ..files import write_atomically
from .notebooks import cell_source, read_notebook, source_lines, write_notebook
from .run import ROOT, notebook_paths

README = ROOT / "README.md"
SETUP_CELL_ID = "colab-setup"
SETUP_MARKER = "# Colab set-up"
BADGE_IMAGE = "https://colab.research.google.com/assets/colab-badge.svg"
BADGE_PATTERN = re.compile(r"\[!\[Open In Colab\]\([^)]*\)\]\(https://colab\.research\.google\.com/github/[^)]*\)")
COLAB_LINK_PATTERN = re.compile(r"https://colab\.research\.google\.com/github/[^/\s)]+/[^/\s)]+/blob/main/")
REPOSITORY_PATTERN = re.compile(r"^\[repository\]:\s*(https://github\.com/([^/\s]+)/([^/\s]+?))/?\s*$", re.M)


def repository_url(readme: Path = README) -> str:
    """The repository's URL, from the README's link definition ``[repository]: https://github.com/OWNER/NAME``."""
    found = REPOSITORY_PATTERN.findall(Path(readme).read_text(encoding="utf-8"))
    if len(found) != 1:
        raise ValueError(f"{readme} must define the repository once, as a line "
                         f"'[repository]: https://github.com/OWNER/NAME' (found {len(found)})")
    return found[0][0]


def colab_url(repository: str, relative_path: str) -> str:
    """The Colab link that opens ``relative_path`` from the repository's main branch."""
    return repository.replace("https://github.com/", "https://colab.research.google.com/github/") \
        + f"/blob/main/{relative_path}"


def badge(repository: str, relative_path: str) -> str:
    return f"[![Open In Colab]({BADGE_IMAGE})]({colab_url(repository, relative_path)})"


def release_tag(version: str = __version__) -> str:
    """The git tag of this version of the course (``v0.1.0``): the set-up cells install from it.

    The version has one source, ``gloss_lite.__version__`` (pyproject.toml reads it from there).
    """
    return f"v{version}"


EXTRAS_MARKERS = ("sentence_transformers", "gloss_lite.integrations", "from datasets", "import datasets")


def notebook_extras(notebook: dict) -> str:
    """``"[integrations]"`` for a notebook whose code imports what that extra brings, else ``""``."""
    code = "\n".join(cell_source(cell) for cell in notebook.get("cells", []) if cell.get("cell_type") == "code")
    return "[integrations]" if any(marker in code for marker in EXTRAS_MARKERS) else ""


def setup_source(repository: str, version: str = __version__, extras: str = "") -> str:
    """The first cell of every notebook: in Colab, install this version of the package; elsewhere nothing.

    It installs ``gloss-lite`` (with ``extras``, such as ``[integrations]`` for a notebook that
    imports sentence-transformers) from the repository at the version's tag, with its own needs
    only (Colab keeps its torch and its kernel packages); nothing is cloned, so no instructor
    notebook comes along. The course's dataset is package data. When the install fails, most
    likely because the tag has not been published yet, the cell stops with what to do.
    """
    tag = release_tag(version)
    return f"""{SETUP_MARKER}: in Google Colab this cell installs the course's package,
# gloss-lite {version} (Colab's own torch and Jupyter packages are kept). For a GPU, first
# choose Runtime > Change runtime type > GPU. In JupyterLab or papermill this cell does
# nothing: the course is already installed there (see the README).
import sys

if "google.colab" in sys.modules:
    import importlib
    import subprocess

    TAG = "{tag}"
    REPOSITORY = "{repository}"
    SOURCE = f"gloss-lite{extras} @ git+{{REPOSITORY}}@{{TAG}}"
    pip = [sys.executable, "-m", "pip", "install", "--quiet", SOURCE]
    if subprocess.run(pip).returncode != 0:
        raise RuntimeError(
            f"Installing {{SOURCE}} failed. If the tag {{TAG}} does not exist yet in "
            f"{{REPOSITORY}}, the course has not been released: the instructor runs "
            "`python -m gloss_lite.course.classroom release` and pushes the tag "
            f"(git push origin {{TAG}}). Until then, set TAG = 'main' above and run "
            "this cell again."
        )
    importlib.invalidate_caches()  # importable at once, without restarting the runtime"""


def _title_with_badge(source: str, repository: str, relative_path: str) -> str:
    wanted = badge(repository, relative_path)
    if BADGE_PATTERN.search(source):
        return BADGE_PATTERN.sub(lambda _: wanted, source, count=1)
    title, _, rest = source.partition("\n")
    return f"{title}\n\n{wanted}\n{rest}" if rest else f"{title}\n\n{wanted}"


def colab_notebook(notebook: dict, repository: str, relative_path: str) -> dict:
    """``notebook`` with its set-up cell first and the badge under its title (a new dict)."""
    with_setup = copy.deepcopy(notebook)
    cells = with_setup["cells"]
    if cells and cell_source(cells[0]).startswith(SETUP_MARKER):
        cells.pop(0)
    setup = {"cell_type": "code", "execution_count": None, "id": SETUP_CELL_ID, "metadata": {},
             "outputs": [], "source": source_lines(setup_source(repository, extras=notebook_extras(with_setup)))}
    cells.insert(0, setup)
    title = next(cell for cell in cells if cell["cell_type"] == "markdown")
    title["source"] = source_lines(_title_with_badge(cell_source(title), repository, relative_path))
    return with_setup


def _readme_with_links(text: str, repository: str) -> str:
    return COLAB_LINK_PATTERN.sub(colab_url(repository, ""), text)


def colab_problems(readme: Path = README, notebooks: list[Path] | None = None) -> list[str]:
    """What is out of step with the README's repository URL (empty when all is in order)."""
    repository = repository_url(readme)
    problems = []
    text = Path(readme).read_text(encoding="utf-8")
    if _readme_with_links(text, repository) != text:
        problems.append(f"{Path(readme).name}: a Colab link points at another repository than {repository}")
    for path in notebook_paths() if notebooks is None else notebooks:
        relative = f"notebooks/{path.name}"
        if f"]({colab_url(repository, relative)})" not in text:
            problems.append(f"{Path(readme).name}: no Colab badge for {relative}")
        notebook = read_notebook(path)
        if notebook != colab_notebook(notebook, repository, relative):
            problems.append(f"{path.name}: the set-up cell or the Colab badge is missing or out of date")
    return problems


def sync_colab(readme: Path = README, notebooks: list[Path] | None = None) -> list[Path]:
    """Rewrite the set-up cells and badges from the README's repository URL; returns the files changed."""
    repository = repository_url(readme)
    changed = []
    text = Path(readme).read_text(encoding="utf-8")
    if _readme_with_links(text, repository) != text:
        write_atomically(Path(readme), _readme_with_links(text, repository))
        changed.append(Path(readme))
    for path in notebook_paths() if notebooks is None else notebooks:
        notebook = read_notebook(path)
        updated = colab_notebook(notebook, repository, f"notebooks/{path.name}")
        if updated != notebook:
            write_notebook(updated, path)
            changed.append(path)
    return changed


def release(root: Path = ROOT, version: str = __version__) -> str:
    """Make the tag the set-up cells install from, after checking that the cells are in step.

    Refuses (``ValueError``) when a set-up cell or badge is out of step (run
    ``python -m gloss_lite.course.classroom colab`` and commit), when the working tree has uncommitted
    changes, or when the tag exists already. Creates the annotated tag ``v<version>`` on ``HEAD``
    and returns it; publishing it (``git push origin v<version>``) is left to the caller.
    """
    import subprocess

    def git(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True)

    problems = colab_problems(Path(root) / "README.md", notebook_paths(Path(root) / "notebooks"))
    if problems:
        raise ValueError("the Colab set-up cells are out of step; run `python -m gloss_lite.course.classroom colab` "
                         "and commit: " + "; ".join(problems))
    if git("status", "--porcelain").stdout.strip():
        raise ValueError("the working tree has uncommitted changes; commit them first, so the tag holds them")
    tag = release_tag(version)
    if git("rev-parse", "--verify", "--quiet", f"refs/tags/{tag}").returncode == 0:
        raise ValueError(f"the tag {tag} exists already; raise __version__ in gloss_lite/__init__.py for a new release")
    made = git("tag", "-a", tag, "-m", f"gloss-lite {version}")
    if made.returncode != 0:
        raise ValueError(f"git tag {tag} failed: {made.stderr.strip()}")
    return tag
