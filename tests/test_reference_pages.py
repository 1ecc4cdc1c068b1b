"""The reference pages that state the course's settings agree with the presets in the code.

``site/gloss_summary.md`` lists the G-Loss defaults of ``TrainConfig()``; ``site/course_and_paper.md``
gives a reason for every setting in which ``TrainConfig()`` and ``TrainConfig.authors()`` differ
(notebook 00 prints that list from the presets). A changed default or a new difference fails here,
naming the page to update.
"""

import ast
import json
import re
from dataclasses import fields
from pathlib import Path

from gloss_lite.training import TrainConfig

SITE = Path(__file__).resolve().parents[1] / "site"
BOOKKEEPING = {"amp", "lpa_eval", "recipe", "progress", "log_grad_share"}  # notebook 00 leaves them out too


def table_rows(page: str, heading: str) -> list[list[str]]:
    """The body rows of the first table under ``heading``, as lists of stripped cells."""
    section = page.split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("|")]
    return [[cell.strip() for cell in row.strip("|").split("|")] for row in rows[2:]]


def test_the_summary_states_the_defaults_of_train_config():
    rows = table_rows((SITE / "gloss_summary.md").read_text(encoding="utf-8"), "Defaults")
    assert len(rows) >= 6
    config = TrainConfig()
    for setting, default, _ in rows:
        name, value = setting.strip("`"), ast.literal_eval(default.strip("`"))
        assert getattr(config, name) == value, (
            f"site/gloss_summary.md says {name} = {value!r}; TrainConfig() has {getattr(config, name)!r}")


def test_the_course_and_paper_page_gives_a_reason_for_every_difference_of_the_presets():
    page = (SITE / "course_and_paper.md").read_text(encoding="utf-8")
    named = set()
    for line in page.splitlines():
        if line.startswith("| `"):
            named.update(re.findall(r"`(\w+)`", line.split("|")[1]))
    course, authors = TrainConfig(), TrainConfig.authors("gloss+ce")
    differ = {f.name for f in fields(course) if f.name not in BOOKKEEPING
              and getattr(course, f.name) != getattr(authors, f.name)}
    assert differ - named == set(), f"site/course_and_paper.md gives no reason for {sorted(differ - named)}"
    assert named - {f.name for f in fields(course)} == set(), "the page names a setting TrainConfig lacks"


def test_notebook_links_to_reference_pages_resolve_in_the_repository_and_on_the_site():
    from gloss_lite.course.run import notebook_paths
    from gloss_lite.course.site import staged_notebook

    linked = set()
    for path in notebook_paths():
        notebook = json.loads(path.read_text(encoding="utf-8"))
        text = "".join("".join(c["source"]) for c in notebook["cells"] if c["cell_type"] == "markdown")
        pages = re.findall(r"\]\(\.\./site/([\w.-]+\.md)", text)
        assert all((SITE / page).is_file() for page in pages), f"{path.name} links a missing page: {pages}"
        linked.update(pages)
        staged = staged_notebook(notebook, "https://example.org/repo", path.name)
        staged_text = "".join("".join(c["source"]) for c in staged["cells"] if c["cell_type"] == "markdown")
        assert "](../site/" not in staged_text  # on the site the pages sit next to the notebooks' folder
        assert all(f"](../{page}" in staged_text for page in pages)
    assert {"notation.md", "markov_chains.md", "gloss_summary.md", "capstone.md"} <= linked


def test_the_course_map_of_notebook_00_names_every_notebook():
    from gloss_lite.course.run import notebook_paths

    notebooks = notebook_paths()
    overview = json.loads(notebooks[0].read_text(encoding="utf-8"))
    (course_map,) = [c for c in overview["cells"] if "".join(c["source"]).startswith("### The course map")]
    rows = re.findall(r"^\| \*\*(\d\d) ", "".join(course_map["source"]), flags=re.M)
    assert rows == [path.name[:2] for path in notebooks], "notebook 00's course map must list every notebook"
