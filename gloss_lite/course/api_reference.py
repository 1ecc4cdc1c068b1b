"""The website's API reference: one page per public module of ``gloss_lite``, from its docstrings.

The modules are found in the package's folder without importing anything (``public_modules``),
so a new module gets its page without edits here; each page is Sphinx's ``automodule`` of it.
``gloss_lite.course.site`` stages these pages with the notebooks.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parents[1]


def _module_file(module: str) -> Path:
    """The file of a module of the package (``gloss_lite.course.site``), found without importing it."""
    relative = PACKAGE_DIR.joinpath(*module.split(".")[1:])
    return relative / "__init__.py" if relative.is_dir() else relative.with_suffix(".py")


def public_modules(package: str = "gloss_lite") -> list[str]:
    """The public modules of ``package`` and of its subpackages (names without a leading underscore), sorted.

    Found in the package's folder, without importing anything, so a new module gets its API page
    without edits here. A subpackage is listed by its modules; a folder without an ``__init__.py``
    (the installed dataset, ``course_data``) is data, not a module.
    """
    folder = _module_file(package).parent
    names = []
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith("_"):
            continue
        if entry.is_dir() and (entry / "__init__.py").is_file():
            names.extend(public_modules(f"{package}.{entry.name}"))
        elif entry.suffix == ".py":
            names.append(f"{package}.{entry.stem}")
    return sorted(names)


def _module_summary(module: str) -> str:
    """The first line of a module's docstring, read from its file without importing it."""
    docstring = ast.get_docstring(ast.parse(_module_file(module).read_text(encoding="utf-8"))) or ""
    return docstring.strip().splitlines()[0] if docstring.strip() else ""


def api_pages(modules: list[str]) -> dict[str, str]:
    """The API reference as MyST pages: ``api/index.md`` and one ``api/<module>.md`` per module."""
    rows = "\n".join(f"| [`{name}`]({name}.md) | {_module_summary(name).replace('|', '/')} |" for name in modules)
    index = (
        "# API reference\n\n"
        "The package `gloss_lite`, one module per concept, from the docstrings of its functions and "
        "classes. Each module's docstring carries the math and names the notebook that teaches it.\n\n"
        f"| module | what it holds |\n| --- | --- |\n{rows}\n\n"
        "```{toctree}\n:hidden:\n:maxdepth: 1\n\n" + "\n".join(modules) + "\n```\n"
    )
    pages = {"api/index.md": index}
    for name in modules:
        pages[f"api/{name}.md"] = (
            f"# `{name}`\n\n```{{eval-rst}}\n.. automodule:: {name}\n   :members:\n   :show-inheritance:\n```\n")
    return pages
