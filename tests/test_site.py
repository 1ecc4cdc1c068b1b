"""The course website: its builder's checks, and the built site in a real browser.

The browser test builds the site (warnings are errors) from the notebooks that this pytest run
executed with their smoke parameters (``executed_notebook`` in ``conftest.py``, shared with
``test_notebooks.py``), serves it on 127.0.0.1 and loads every page in Debian's chromium through
Playwright, with every request that would leave 127.0.0.1 aborted and recorded.
"""

import http.server
import io
import json
import re
import shutil
import threading
import urllib.error
import urllib.parse
import urllib.request
from functools import partial
from pathlib import Path

import numpy as np
import pytest

from gloss_lite.course import site as site_builder
from gloss_lite.course.api_reference import public_modules
from gloss_lite.course.colab import colab_url, repository_url
from gloss_lite.course.run import notebook_paths
from gloss_lite.course.site import (
    SiteError,
    build_site,
    executed_notebooks,
    missing_site_tools,
    publish,
    results_page,
    stage,
)

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
NOTEBOOKS = notebook_paths()


def test_missing_executed_notebooks_say_run_make_course(tmp_path):
    with pytest.raises(SiteError, match=r"run `make course` first") as error:
        executed_notebooks(tmp_path)
    assert NOTEBOOKS[0].name in str(error.value)
    # a source notebook (never executed) is refused too
    shutil.copy(NOTEBOOKS[0], tmp_path / NOTEBOOKS[0].name)
    with pytest.raises(SiteError, match="not an executed copy"):
        executed_notebooks(tmp_path, sources=NOTEBOOKS[:1])


def fake_executed(folder, *, finished=True):
    """Copies of the course notebooks that look executed by papermill (no outputs: nothing runs here)."""
    folder.mkdir()
    for path in NOTEBOOKS:
        notebook = json.loads(path.read_text(encoding="utf-8"))
        notebook["metadata"]["papermill"] = {"output_path": str(folder / path.name), "exception": None,
                                             "end_time": "2025-01-01T00:00:00" if finished else None}
        (folder / path.name).write_text(json.dumps(notebook), encoding="utf-8")
    return folder


def test_a_run_stopped_part_way_is_not_taken_for_an_executed_copy(tmp_path):
    folder = fake_executed(tmp_path / "executed", finished=False)
    with pytest.raises(SiteError, match="its run did not finish"):
        executed_notebooks(folder)


def test_build_refuses_to_write_into_the_sources(tmp_path):
    folder = fake_executed(tmp_path / "executed")
    with pytest.raises(SiteError, match="refusing"):
        build_site(folder, NOTEBOOKS[0].parent / "site", build_dir=tmp_path / "build")
    stranger = tmp_path / "mine"
    stranger.mkdir()
    (stranger / "notes.txt").write_text("keep me", encoding="utf-8")
    with pytest.raises(SiteError, match="refusing to replace"):
        build_site(folder, stranger, build_dir=tmp_path / "build")
    assert (stranger / "notes.txt").read_text(encoding="utf-8") == "keep me"


def test_every_module_file_of_the_package_gets_an_api_page():
    package = Path(__file__).resolve().parents[1] / "gloss_lite"
    expected = {".".join(("gloss_lite",) + path.relative_to(package).with_suffix("").parts)
                for path in package.rglob("*.py") if not path.stem.startswith("_")}
    assert set(public_modules()) == expected
    assert "gloss_lite.lpa" in expected and "gloss_lite.course.site" in expected


def test_results_page_with_and_without_a_summary(tmp_path):
    page, tables = results_page(tmp_path)
    assert "No results yet" in page and tables == []
    (tmp_path / "run_summary.md").write_text("# Summary of run.csv\n\n## Scores\n\n| a |\n| --- |\n| 1 |\n",
                                             encoding="utf-8")
    (tmp_path / "run.csv").write_text("dataset,seed\nmr,0\nmr,1\nr8,0\n", encoding="utf-8")
    page, tables = results_page(tmp_path)
    assert tables == [tmp_path / "run.csv"]
    assert page.count("\n# ") + page.startswith("# ") == 1, "one title; the summary's headings go one level down"
    assert "## Summary of run.csv" in page and "### Scores" in page
    assert re.search(r"\| \{download\}`run.csv <_results/run.csv>` \| 3 \| `dataset`, `seed` \|", page)


def test_a_results_file_that_is_not_utf8_is_named_in_the_error(tmp_path):
    (tmp_path / "run_summary.md").write_text("# Summary\n", encoding="utf-8")
    (tmp_path / "run.csv").write_bytes("dataset,accuracy\nr\xe9sum\xe9,0.9\n".encode("latin-1"))
    with pytest.raises(SiteError, match=r"run.csv is not UTF-8 text \(byte \d+\); save it as UTF-8"):
        results_page(tmp_path)


def test_publishing_replaces_the_builders_files_and_keeps_everything_else(tmp_path):
    first, second, output = tmp_path / "first", tmp_path / "second", tmp_path / "site"
    for folder, pages in ((first, ["index.html", "old.html", "_static/a.css"]), (second, ["index.html", "new.html"])):
        for page in pages:
            (folder / page).parent.mkdir(parents=True, exist_ok=True)
            (folder / page).write_text(f"{folder.name} {page}")
    publish(first, output)
    (output / ".nojekyll").write_text("")
    (output / ".git").mkdir()
    (output / ".git" / "HEAD").write_text("ref: refs/heads/gh-pages")
    publish(second, output)
    files = sorted(str(p.relative_to(output)) for p in output.rglob("*") if p.is_file())
    assert files == [".git/HEAD", ".gloss-lite-site.json", ".nojekyll", "index.html", "new.html"]
    assert (output / "index.html").read_text() == "second index.html"


def test_a_failed_build_leaves_the_previous_site_and_your_files(tmp_path, monkeypatch):
    if missing_site_tools():
        pytest.skip("the site tools are not installed")
    folder = fake_executed(tmp_path / "executed")
    output = tmp_path / "site"
    output.mkdir()
    for name, text in {".buildinfo": "sphinx", "index.html": "the previous site", ".nojekyll": ""}.items():
        (output / name).write_text(text)

    def broken_stage(notebooks, build_dir, **settings):
        source = build_dir / "source"
        source.mkdir(parents=True)
        (build_dir / site_builder.BUILD_MARKER).write_text("")
        (source / "conf.py").write_text("raise RuntimeError('a broken configuration')\n")
        return source

    monkeypatch.setattr(site_builder, "stage", broken_stage)
    with pytest.raises(SiteError, match=r"Sphinx failed .*was left as it was"):
        build_site(folder, output, build_dir=tmp_path / "build")
    assert {p.name: p.read_text() for p in output.iterdir()} == {
        ".buildinfo": "sphinx", "index.html": "the previous site", ".nojekyll": ""}


def test_the_student_build_shows_no_solution_model_answer_or_instructor_link(tmp_path):
    folder = fake_executed(tmp_path / "executed")
    executed = sorted(folder.glob("*.ipynb"))
    source = stage(executed, tmp_path / "build", student=True)
    repository = repository_url()
    for path in (source / "notebooks").glob("*.ipynb"):
        text = path.read_text(encoding="utf-8")
        assert "### BEGIN SOLUTION" not in text and "### YOUR CODE BELOW" in text, path.name
        assert "Model answers" not in text and "colab.research.google.com" not in text, path.name
    assert "colab.research.google.com" not in (source / "_include" / "notebooks.md").read_text()
    assert '"use_edit_page_button": False' in (source / "conf.py").read_text()
    assert not any("course.exercises" in page.name for page in (source / "api").iterdir())
    full = stage(executed, tmp_path / "full")
    assert any("### BEGIN SOLUTION" in p.read_text(encoding="utf-8") for p in (full / "notebooks").iterdir())
    assert colab_url(repository, f"notebooks/{NOTEBOOKS[0].name}") in (full / "_include" / "notebooks.md").read_text()


# ---------------------------------------------------------------------------------------------
# The built site in a browser
# ---------------------------------------------------------------------------------------------

def _browser_missing() -> str | None:
    if missing_site_tools():
        return f"the site tools are missing ({', '.join(missing_site_tools())}; the `site` extra, Python 3.11+)"
    if not CHROMIUM.exists():
        return f"no chromium at {CHROMIUM} (apt-get install chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is missing (pip install the `test` extra)"
    return None


browser_needed = pytest.mark.skipif(_browser_missing() is not None, reason=str(_browser_missing()))


@pytest.fixture(scope="module")
def site(executed_notebook, tmp_path_factory):
    if _browser_missing():
        pytest.skip(_browser_missing())
    executed = [executed_notebook(path) for path in NOTEBOOKS]
    folder = tmp_path_factory.mktemp("site")
    index = build_site(executed[0].parent, folder / "html", build_dir=folder / "build", strict=True)
    return index.parent


@pytest.fixture(scope="module")
def server(site):
    handler = partial(_QuietHandler, directory=str(site))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()
    httpd.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def browser(server, tmp_path_factory):
    from playwright.sync_api import sync_playwright

    external = []

    def only_loopback(route):
        if route.request.url.startswith(server):
            route.continue_()
        else:
            external.append(route.request.url)
            route.abort()

    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")), executable_path=str(CHROMIUM), headless=True,
            args=CHROMIUM_ARGS, viewport={"width": 1280, "height": 900})
        context.route("**/*", only_loopback)
        yield context, external
        context.close()


def _pages(site: Path) -> list[str]:
    return sorted(str(path.relative_to(site)) for path in site.rglob("*.html")
                  if path.relative_to(site).parts[0] not in ("_static", "_sources", "_images", "_downloads"))


def _screenshot_variance(png: bytes) -> float:
    from PIL import Image

    return float(np.asarray(Image.open(io.BytesIO(png)).convert("L"), dtype=float).var())


# the article's prose, without code, outputs, API signatures and typeset math: where raw TeX must not remain
PROSE_JS = """() => {
  const article = document.querySelector('article') || document.body;
  const copy = article.cloneNode(true);
  copy.querySelectorAll('pre, code, .sig, .cell_output, .output, mjx-container, script, style')
    .forEach(e => e.remove());
  return copy.innerText;
}"""

IMAGES_JS = """async () => {
  const images = [...document.images];
  images.forEach(img => { img.loading = 'eager'; });
  await Promise.all(images.map(img => img.complete ? null : new Promise(done => {
    img.addEventListener('load', done); img.addEventListener('error', done); })));
  return images.map(img => ({src: img.currentSrc || img.src, width: img.naturalWidth}));
}"""

MATH_JS = """async () => {
  const math = document.querySelectorAll('.math').length;
  if (!math) return {math: 0, typeset: 0};
  await window.MathJax.startup.promise;
  return {math: math, typeset: document.querySelectorAll('mjx-container').length};
}"""


@browser_needed
@pytest.mark.notebook
def test_every_page_renders_offline_in_chromium(site, server, browser):
    context, external = browser
    pages = _pages(site)
    assert {"index.html", "notation.html", "markov_chains.html", "results.html", "api/index.html"} <= set(pages)
    notebook_pages = {f"notebooks/{path.stem}.html" for path in NOTEBOOKS}
    assert notebook_pages <= set(pages)
    repository = repository_url()
    page = context.new_page()
    links, typeset_pages, problems = set(), [], []
    for name in pages:
        response = page.goto(server + name, wait_until="load")
        assert response.status == 200, name
        math = page.evaluate(MATH_JS)
        if math["math"]:
            typeset_pages.append(name)
            if math["typeset"] < math["math"]:
                problems.append(f"{name}: {math['typeset']} of {math['math']} formulas typeset")
        prose = page.evaluate(PROSE_JS)
        raw = re.findall(r"\\\(|\\\[|\$\$|\$[^$\s][^$\n]*\$", prose)
        if raw:
            problems.append(f"{name}: raw TeX in the text: {raw[:3]}")
        broken = [image["src"] for image in page.evaluate(IMAGES_JS) if image["width"] == 0]
        if broken:
            problems.append(f"{name}: images not loaded: {broken}")
        variance = _screenshot_variance(page.screenshot())
        if variance < 50:
            problems.append(f"{name}: the screenshot is blank (pixel variance {variance:.1f})")
        links.update(page.eval_on_selector_all("a[href]", "links => links.map(a => a.href)"))
        if name in notebook_pages:
            stem = Path(name).stem
            hrefs = page.eval_on_selector_all("a[href]", "links => links.map(a => a.getAttribute('href'))")
            wanted = {"Colab": colab_url(repository, f"notebooks/{stem}.ipynb"),
                      "download": f"../_sources/notebooks/{stem}.ipynb",
                      "edit": f"{repository}/edit/main/notebooks/{stem}.ipynb"}
            problems += [f"{name}: no {what} link ({href})" for what, href in wanted.items() if href not in hrefs]
            index = sorted(notebook_pages).index(name)
            if index > 0 and not page.query_selector("a.left-prev"):
                problems.append(f"{name}: no link to the previous page")
            if index < len(notebook_pages) - 1 and not page.query_selector("a.right-next"):
                problems.append(f"{name}: no link to the next page")
    assert not problems, "\n".join(problems)
    assert "notebooks/02_label_propagation.html" in typeset_pages and "notation.html" in typeset_pages

    broken = []
    documents = {}
    for link in sorted(links):
        if not link.startswith(server):
            continue
        address, _, anchor = link.partition("#")
        if address not in documents:
            try:
                with urllib.request.urlopen(address) as reply:
                    documents[address] = reply.read().decode("utf-8", errors="replace")
            except urllib.error.HTTPError as error:
                documents[address] = None
                broken.append(f"{link}: HTTP {error.code}")
        text = documents[address]
        if text is not None and anchor and address.endswith(".html"):
            anchor = urllib.parse.unquote(anchor)
            if f'id="{anchor}"' not in text:
                broken.append(f"{link}: no element with id {anchor!r}")
    assert not broken, "\n".join(broken)
    assert len(documents) > len(pages) / 2, "the internal links were not collected"

    page.goto(server + "search.html?q=label+propagation", wait_until="load")
    page.wait_for_selector("#search-results li a", timeout=30_000)
    found = page.eval_on_selector_all("#search-results li a", "links => links.map(a => a.getAttribute('href'))")
    assert any("notebooks/02_label_propagation" in href for href in found), found
    page.close()
    assert not external, f"requests left 127.0.0.1: {sorted(set(external))}"
