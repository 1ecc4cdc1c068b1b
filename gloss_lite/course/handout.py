"""The student hand-out in one command: the student copies of the notebooks and the student build of the website.

    python -m gloss_lite.course.handout [--notebooks outputs/course] [--output handout]

``make handout`` calls this, after ``make course``. It writes

- ``OUTPUT/notebooks/``: the student copies (``gloss_lite.course.classroom.write_student_copies``):
  every solution a stub between ``### YOUR CODE BELOW`` and ``### YOUR CODE ABOVE``, no model
  answers, no outputs, no Colab badge;
- ``OUTPUT/site/``: the student build of the website (``gloss_lite.course.site``, ``student=True``)
  from the executed notebooks: the same pages, figures and tables, with the student copies'
  stubs in place of the solutions, no model answers, and no link to the instructor's notebooks.

That is what a class gets: hand out this folder (or put the notebooks where your students open
them, in Colab or JupyterLab, and publish the site). Keep ``notebooks/`` and the full site to
yourself: they hold the solutions and the model answers. Students install the package itself,
which holds the method and the checks that ``check`` runs; the exercises ask for the method's
pieces, so its source is, by design, a place where an answer can be read (see the README).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .classroom import write_student_copies
from .run import ROOT
from .site import DEFAULT_BUILD_DIR, DEFAULT_NOTEBOOKS, SiteError, build_site

DEFAULT_OUTPUT = ROOT / "handout"


def make_handout(output: Path = DEFAULT_OUTPUT, notebooks_dir: Path = DEFAULT_NOTEBOOKS, *,
                 strict: bool = False) -> tuple[list[Path], Path]:
    """Write the hand-out into ``output``; returns the student copies and the site's home page.

    The site is built first (its checks need the executed notebooks of ``make course``), so a
    missing executed notebook stops everything before a file is written.
    """
    output = Path(output)
    index = build_site(notebooks_dir, output / "site", build_dir=DEFAULT_BUILD_DIR.with_name("handout-site-build"),
                       strict=strict, student=True)
    copies, _ = write_student_copies(output / "notebooks")
    return copies, index


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gloss_lite.course.handout", description=__doc__.splitlines()[0])
    parser.add_argument("--notebooks", type=Path, default=DEFAULT_NOTEBOOKS,
                        help="folder of the executed notebooks (default: outputs/course, written by `make course`)")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT,
                        help="folder for the hand-out (default: handout/)")
    args = parser.parse_args(argv)
    try:
        copies, index = make_handout(args.output, args.notebooks)
    except (SiteError, ValueError, FileExistsError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"The hand-out is in {args.output}: {len(copies)} student notebooks in {args.output / 'notebooks'}, "
          f"the student site in {index.parent} (open {index})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
