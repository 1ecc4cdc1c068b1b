"""The course as a website: Sphinx pages from the notebooks that ``make course`` executed.

    python -m gloss_lite.course.site [--notebooks outputs/course] [--output outputs/site] [--strict]

``make site`` calls this. Nothing is executed again: the pages show the executed copies in
``outputs/course/`` with their outputs (figures, tables), and the command stops with "run
`make course` first" when a course notebook has no executed copy there. The site's own pages
(home page, notation, a primer on absorbing Markov chains) and its Sphinx configuration live in
``site/``; the builder copies them, the executed notebooks, the README (the home page quotes it)
and pages it generates into a build folder (``outputs/site-build/``) and runs Sphinx there, so
it never writes into ``notebooks/`` or ``site/``. The generated pages:

- ``api/``: one page per public module of ``gloss_lite``, found in the package when the site is
  built (``public_modules``), each from its docstrings (autodoc, with napoleon for ``Args:``);
- ``results``: every ``results/*_summary.md`` with the CSV files to download, or "no results yet";
- the home page's table of notebooks, with each notebook's line from the README's table.

The Colab badge under every notebook's title loads its image from Google; the staged copy shows a
local image instead (``site/_static/colab-badge.svg``) and links to the same notebook
(``gloss_lite.course.colab.colab_url``). The theme (sphinx-book-theme) and MathJax 3
(sphinx-mathjax-offline) ship with their pip packages, so the build and the pages need no network.
"""

from __future__ import annotations

import argparse
import copy
import csv
import hashlib
import importlib.util
import io
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from ..files import write_atomically
from .api_reference import api_pages, public_modules
from .classroom import student_notebook
from .colab import BADGE_IMAGE, BADGE_PATTERN, colab_url, repository_url
from .notebooks import NotebookError, read_notebook
from .records import MIME_TYPE as RECORD_MIME_TYPE
from .run import ROOT, notebook_paths

SITE_SOURCES = ROOT / "site"
README = ROOT / "README.md"
RESULTS_DIR = ROOT / "results"
DEFAULT_NOTEBOOKS = ROOT / "outputs" / "course"
DEFAULT_OUTPUT = ROOT / "outputs" / "site"
DEFAULT_BUILD_DIR = ROOT / "outputs" / "site-build"
BUILD_MARKER = ".gloss-lite-site-build"
LOCAL_BADGE = "_static/colab-badge.svg"
# a row of the README's table of notebooks: | [`NN_name`](notebooks/NN_name.ipynb) | badge | what you do there |
README_ROW = re.compile(
    r"^\|\s*\[`(?P<stem>\d\d_\w+)`\]\(notebooks/(?P=stem)\.ipynb\)\s*\|[^|\n]*\|\s*(?P<text>.*?)\s*\|\s*$", re.M)


SITE_RECORD = ".gloss-lite-site.json"
# The student build: what a class may see. Notebook pages are the student copies (stubs for the
# solutions, no model answers) with the outputs of every other cell; no Colab, repository or edit
# link (they lead to the instructor's notebooks); no API page of the course's exercise catalogue.
STUDENT_HIDDEN_MODULES = ("gloss_lite.course.exercises",)
STUDENT_CONF = """

# The student build (python -m gloss_lite.course.site --student): no link to the instructor's notebooks
html_theme_options.update({"use_repository_button": False, "use_edit_page_button": False, "launch_buttons": {}})
"""
SITE_TOOLS = ("sphinx", "myst_nb", "sphinx_book_theme", "sphinx-mathjax-offline")  # the `site` extra


class SiteError(ValueError):
    """Missing executed notebooks or site tools, an unsafe output folder, or a failed Sphinx build."""


def missing_site_tools() -> list[str]:
    """The packages of the ``site`` extra that are not installed (an empty list when all are)."""
    return [name for name in SITE_TOOLS if importlib.util.find_spec(name) is None]


# ---------------------------------------------------------------------------------------------
# What goes into the site
# ---------------------------------------------------------------------------------------------

def executed_notebooks(folder: Path, sources: list[Path] | None = None) -> list[Path]:
    """The executed copy in ``folder`` of every course notebook, in teaching order.

    ``SiteError`` naming each notebook that has no copy there, a copy that papermill did not
    execute, one whose run failed or did not finish, with what to run.
    """
    folder = Path(folder)
    sources = notebook_paths() if sources is None else sources
    if not sources:
        raise SiteError("the course has no notebooks (notebooks/NN_*.ipynb)")
    found, problems = [], []
    for source in sources:
        executed = folder / source.name
        if not executed.is_file():
            problems.append(f"{source.name}: no executed copy in {folder}")
            continue
        try:
            metadata = read_notebook(executed).get("metadata")
        except NotebookError as error:
            problems.append(str(error))
            continue
        run = metadata.get("papermill") if isinstance(metadata, dict) else None
        if not run:
            problems.append(f"{executed}: not an executed copy (papermill did not write it)")
        elif run.get("exception"):
            problems.append(f"{executed}: its run failed; fix the notebook and run it again")
        elif not run.get("end_time"):
            problems.append(f"{executed}: its run did not finish (it was stopped part-way); run it again")
        else:
            found.append(executed)
    if problems:
        raise SiteError("the site shows the executed notebooks, and some are missing; run `make course` first "
                        "(it writes them to outputs/course/), or pass --notebooks FOLDER:\n  " + "\n  ".join(problems))
    return found


def _demoted(markdown: str) -> str:
    """``markdown`` with every heading one level lower (``#`` -> ``##``), outside code fences."""
    lines, fenced = [], False
    for line in markdown.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        lines.append("#" + line if not fenced and re.match(r"#{1,5} ", line) else line)
    return "\n".join(lines) + "\n"


def _text(path: Path) -> str:
    """A results file's text; ``SiteError`` naming the file when it is not UTF-8."""
    try:
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as error:
        raise SiteError(f"{path} is not UTF-8 text (byte {error.start}); save it as UTF-8, or remove it from "
                        f"results/, then build again") from None


def results_page(results_dir: Path, files_folder: str = "_results") -> tuple[str, list[Path]]:
    """The page of reproduction results and the CSV files it offers for download.

    Every ``*_summary.md`` in ``results_dir``, headings demoted under the page's title, then each
    CSV with its number of rows and its columns; "No results yet" when there is no summary.
    """
    results_dir = Path(results_dir)
    summaries = sorted(results_dir.glob("*_summary.md")) if results_dir.is_dir() else []
    tables = sorted(results_dir.glob("*.csv")) if results_dir.is_dir() else []
    page = ["# Reproduction results\n"]
    if not summaries:
        page.append("No results yet. `python -m gloss_lite.reproduction` runs the paper's comparison and writes "
                    "its results and a summary to `results/` (see the README, *Reproducing the paper*).\n")
        return "\n".join(page), []
    page.append("The comparison of `python -m gloss_lite.reproduction`, as committed in `results/`: the "
                "summary of each results file (test scores over seeds, and each method against CE of its "
                "recipe, paired by seed, with a verdict per claim of the paper). Notebook 07 reads the same "
                "files.\n")
    page.extend(_demoted(_text(path)) for path in summaries)
    if tables:
        page.append("## The results files\n\n| file | rows | columns |\n| --- | --- | --- |")
        for path in tables:
            try:
                table = list(csv.reader(io.StringIO(_text(path), newline="")))
            except csv.Error as error:
                raise SiteError(f"{path} is not CSV ({error}); fix or remove it, then build again") from None
            header, count = (table[0] if table else []), max(len(table) - 1, 0)
            page.append(f"| {{download}}`{path.name} <{files_folder}/{path.name}>` | {count} | "
                        f"{', '.join(f'`{column}`' for column in header)} |")
    return "\n".join(page) + "\n", tables


def _notebook_title(notebook: dict, fallback: str) -> str:
    for cell in notebook["cells"]:
        if cell["cell_type"] == "markdown":
            first = "".join(cell["source"]).strip().splitlines()[0] if "".join(cell["source"]).strip() else ""
            return first.lstrip("#").strip() if first.startswith("#") else fallback
    return fallback


def notebooks_section(notebooks: list[Path], readme_text: str, repository: str | None) -> str:
    """The home page's table of notebooks (page, Colab link, the README's line) and the README's notes on it.

    ``repository=None`` (the student build): no Colab links, which would open the instructor's copies.
    """
    described = {match["stem"]: match["text"] for match in README_ROW.finditer(readme_text)}
    rows = []
    for path in notebooks:
        title = _notebook_title(read_notebook(path), path.stem)
        colab = "" if repository is None else \
            f"[![Open In Colab]({LOCAL_BADGE})]({colab_url(repository, f'notebooks/{path.name}')})"
        rows.append(f"| [{title}](notebooks/{path.name}) | {colab} | {described.get(path.stem, '')} |")
    section = readme_text.split("\n## The notebooks\n", 1)
    notes = ""
    if len(section) == 2:
        body = section[1].split("\n## ", 1)[0]
        notes = "\n".join(line for line in body.splitlines() if not line.startswith("|")).strip()
    return ("| notebook | Colab | what you do there |\n| --- | --- | --- |\n" + "\n".join(rows) + "\n\n"
            + notes + "\n")


def display_math_as_blocks(markdown: str) -> str:
    """``markdown`` with a blank line before and after every ``$$`` block that starts a line.

    Jupyter renders ``$$ ... $$`` inside a paragraph as display math; MyST reads such a block as
    part of the paragraph, where a line inside it that starts with ``+`` or ``-`` becomes a list
    and ``\\,`` loses its backslash. As a block of its own it is math. Code fences are left alone.
    """
    lines, in_math, in_code, after_math = [], False, False, False
    for line in markdown.split("\n"):
        stripped = line.strip()
        if after_math and stripped:
            lines.append("")
        after_math = False
        if stripped.startswith("```") and not in_math:
            in_code = not in_code
        elif not in_code and not in_math and stripped.startswith("$$"):
            if lines and lines[-1].strip():
                lines.append("")
            in_math = not (len(stripped) > 2 and stripped.endswith("$$"))
            after_math = not in_math
        elif in_math and stripped.endswith("$$"):
            in_math, after_math = False, True
        lines.append(line)
    return "\n".join(lines)


def staged_notebook(notebook: dict, repository: str, name: str, *, student: bool = False) -> dict:
    """The executed notebook as the site shows it (a new dict).

    The Colab badge gets a local image and keeps its link; a link to a site page
    (``../site/notation.md``) points to the page in the site; display math becomes a block of its
    own (``display_math_as_blocks``); the numbers a notebook records for its tests
    (``gloss_lite.course.records``) are not shown. ``student=True``: the student copy of it
    (``classroom.student_notebook``): stubs for the solutions, no model answers, no badge.
    """
    staged = student_notebook(notebook, name=name, keep_outputs=True) if student else copy.deepcopy(notebook)
    # a notebook links the site's pages as ../site/page.md (right in the repository); here the
    # pages sit one folder above the notebooks
    site_link = re.compile(r"\]\(\.\./site/")
    badge = f"[![Open In Colab](../{LOCAL_BADGE})]({colab_url(repository, f'notebooks/{name}')})"
    for cell in staged["cells"]:
        if cell["cell_type"] == "markdown":
            text = site_link.sub("](../", BADGE_PATTERN.sub(lambda _: badge, "".join(cell["source"])))
            cell["source"] = display_math_as_blocks(text.replace(BADGE_IMAGE, f"../{LOCAL_BADGE}"))
        elif cell["cell_type"] == "code":
            for output in cell["outputs"]:
                output.get("data", {}).pop(RECORD_MIME_TYPE, None)
            cell["outputs"] = [output for output in cell["outputs"] if output.get("data", True)]
    return staged


# ---------------------------------------------------------------------------------------------
# Staging and building
# ---------------------------------------------------------------------------------------------

def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def _check_output_folders(output: Path, build_dir: Path, notebooks_dir: Path) -> None:
    for path, role in ((output, "output"), (build_dir, "build")):
        for protected in (ROOT / "notebooks", SITE_SOURCES, notebooks_dir):
            if _inside(path, protected.resolve()) or _inside(protected.resolve(), path):
                raise SiteError(f"refusing to use {path} as the {role} folder: it would write into or over "
                                f"{protected}; choose a folder under outputs/, e.g. {DEFAULT_OUTPUT}")
        if path.exists() and not path.is_dir():
            raise SiteError(f"the {role} folder {path} is a file; choose a folder")
    if _inside(output, build_dir) or _inside(build_dir, output):
        raise SiteError(f"the output folder {output} and the build folder {build_dir} must be separate")
    if output.is_dir() and any(output.iterdir()) and not (output / ".buildinfo").is_file() \
            and not (output / SITE_RECORD).is_file():
        raise SiteError(f"refusing to replace {output}: it is not empty and holds no Sphinx build; "
                        "choose another output folder")
    if build_dir.is_dir() and any(build_dir.iterdir()) and not (build_dir / BUILD_MARKER).is_file():
        raise SiteError(f"refusing to clear {build_dir}: this builder did not make it; choose another build folder")


def stage(notebooks: list[Path], build_dir: Path, *, sources: Path = SITE_SOURCES, readme: Path = README,
          results_dir: Path = RESULTS_DIR, student: bool = False) -> Path:
    """Write the Sphinx source tree into ``build_dir/source`` (cleared first); return that folder.

    ``student=True``: the student build (see ``STUDENT_CONF``).
    """
    build_dir = Path(build_dir)
    if build_dir.exists():
        shutil.rmtree(build_dir)
    source = build_dir / "source"
    shutil.copytree(sources, source, ignore=shutil.ignore_patterns("__pycache__", "_build"))
    (build_dir / BUILD_MARKER).write_text("written by python -m gloss_lite.course.site\n", encoding="utf-8")
    repository = repository_url(readme)
    readme_text = Path(readme).read_text(encoding="utf-8")
    modules = [m for m in public_modules() if not (student and m.startswith(STUDENT_HIDDEN_MODULES))]
    generated = {
        "_include/README.md": readme_text,
        "_include/notebooks.md": notebooks_section(notebooks, readme_text, None if student else repository),
        **api_pages(modules),
    }
    if student:
        generated["conf.py"] = (source / "conf.py").read_text(encoding="utf-8") + STUDENT_CONF
    results, tables = results_page(results_dir)
    generated["results.md"] = results
    for relative, text in generated.items():
        (source / relative).parent.mkdir(parents=True, exist_ok=True)
        (source / relative).write_text(text, encoding="utf-8")
    for table in tables:
        (source / "_results").mkdir(exist_ok=True)
        shutil.copy2(table, source / "_results" / table.name)
    (source / "notebooks").mkdir()
    for path in notebooks:
        notebook = staged_notebook(read_notebook(path), repository, path.name, student=student)
        (source / "notebooks" / path.name).write_text(json.dumps(notebook, indent=1, ensure_ascii=False) + "\n",
                                                      encoding="utf-8")
    return source


def publish(built: Path, output: Path) -> None:
    """Copy the site Sphinx built into ``output``: each file replaced atomically, the files an earlier
    build wrote and this one did not removed, and every other file (``.git``, ``.nojekyll``, yours)
    left alone. ``output/.gloss-lite-site.json`` lists what the builder wrote."""
    record = output / SITE_RECORD
    try:
        earlier = set(json.loads(record.read_text(encoding="utf-8"))["files"]) if record.is_file() else set()
    except (ValueError, KeyError, TypeError):
        earlier = set()
    files = sorted(str(p.relative_to(built)) for p in built.rglob("*") if p.is_file())
    for relative in files:
        target = output / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(target, (built / relative).read_bytes())
    for relative in sorted(earlier - set(files)):
        stale = (output / relative).resolve()
        if isinstance(relative, str) and stale.is_file() and output.resolve() in stale.parents:
            stale.unlink()
    digest = hashlib.sha256("\n".join(files).encode()).hexdigest()
    write_atomically(record, json.dumps({"written by": "python -m gloss_lite.course.site", "files": files,
                                         "digest": digest}, indent=1).encode("utf-8"))


def build_site(notebooks_dir: Path = DEFAULT_NOTEBOOKS, output: Path = DEFAULT_OUTPUT, *,
               build_dir: Path | None = None, strict: bool = False, results_dir: Path = RESULTS_DIR,
               student: bool = False) -> Path:
    """Stage the site and run Sphinx (html); return the path of the home page, ``output/index.html``.

    ``strict=True`` turns every Sphinx warning into an error (the tests build that way);
    ``student=True`` builds the site to hand to a class (see ``STUDENT_CONF``). Raises ``SiteError``
    before writing anything when a notebook's executed copy is missing, a results file is not
    UTF-8 or a folder is unsafe, and after a failed build with Sphinx's messages: Sphinx builds
    into the build folder, and the output folder changes only once a build has succeeded
    (``publish``).
    """
    output = Path(output).resolve()
    build_dir = Path(build_dir).resolve() if build_dir is not None else DEFAULT_BUILD_DIR.resolve()
    notebooks = executed_notebooks(Path(notebooks_dir))
    if missing_site_tools():
        raise SiteError(f"the site tools are not installed ({', '.join(missing_site_tools())}): "
                        'pip install -e ".[site]" (Python 3.11+), or run `make site`')
    _check_output_folders(output, build_dir, Path(notebooks_dir).resolve())
    source = stage(notebooks, build_dir, results_dir=results_dir, student=student)
    html = build_dir / "html"
    command = [sys.executable, "-m", "sphinx", "-b", "html", "-E", "-q", "-d", str(build_dir / "doctrees")]
    if strict:
        command += ["-W", "--keep-going"]
    package_root = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")]))}
    done = subprocess.run(command + [str(source), str(html)], env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SiteError(f"Sphinx failed (exit {done.returncode}); {output} was left as it was:\n"
                        f"{done.stderr.strip()[-6000:]}")
    if done.stderr.strip():
        print(done.stderr.strip(), file=sys.stderr)
    publish(html, output)
    return output / "index.html"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gloss_lite.course.site", description=__doc__.splitlines()[0])
    parser.add_argument("--notebooks", type=Path, default=DEFAULT_NOTEBOOKS,
                        help="folder of the executed notebooks (default: outputs/course, written by `make course`)")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT,
                        help="folder for the site (default: outputs/site)")
    parser.add_argument("--build-dir", type=Path, default=DEFAULT_BUILD_DIR,
                        help="folder for the staged sources (default: outputs/site-build)")
    parser.add_argument("--strict", action="store_true", help="fail on any Sphinx warning")
    parser.add_argument("--student", action="store_true",
                        help="the student build: no solutions, model answers or links to the instructor's notebooks")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    try:
        index = build_site(args.notebooks, args.output, build_dir=args.build_dir, strict=args.strict,
                           student=args.student)
    except SiteError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"The site is in {index.parent} ({time.perf_counter() - start:.0f} s); open {index} in a browser")
    return 0


if __name__ == "__main__":
    sys.exit(main())
