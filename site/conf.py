"""Sphinx configuration of the course website.

``python -m gloss_lite.course.site`` copies this folder, the executed notebooks, the README and the
generated pages (API reference, results) into a build folder and runs Sphinx there; nothing is
executed again (``nb_execution_mode = "off"``). Everything the pages load ships with the build:
the theme's assets come with the pip packages and MathJax 3 with ``sphinx-mathjax-offline``.
"""

from gloss_lite import __version__
from gloss_lite.course.colab import repository_url

project = "G-Loss, step by step"
author = "the G-Loss course"
copyright = "the G-Loss course, MIT licence"
release = version = __version__

extensions = [
    "myst_nb",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx-mathjax-offline",
]

root_doc = "index"
exclude_patterns = ["_include", "_build", "**.ipynb_checkpoints", "conf.py"]
suppress_warnings = ["myst.header"]  # notebooks step from # to ### for their short sections

# Notebooks: the executed copies from `make course`, as they are
nb_execution_mode = "off"
nb_merge_streams = True
nb_ipywidgets_js = {}  # the widget manager would come from a CDN; the pages show the widgets' text
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence"]
myst_heading_anchors = 3
myst_dmath_double_inline = True  # $$...$$ right after a line of text, as Jupyter renders it

# API reference from the docstrings ("Args:" / "Returns:" sections)
autodoc_member_order = "bysource"
autodoc_default_options = {"members": True, "show-inheritance": True}
autodoc_typehints = "description"
napoleon_google_docstring = True
napoleon_numpy_docstring = False

# MathJax 3 from the local copy (sphinx-mathjax-offline copies it into _static/mathjax)
mathjax_path = "mathjax/tex-chtml.js"

REPOSITORY = repository_url()

html_theme = "sphinx_book_theme"
html_title = project
html_static_path = ["_static"]
html_css_files = ["course.css"]
html_copy_source = True
html_show_sourcelink = False
html_last_updated_fmt = None
html_theme_options = {
    "repository_url": REPOSITORY,
    "repository_branch": "main",
    "path_to_docs": "",  # notebook pages: notebooks/NN_*.ipynb, as in the repository
    "use_repository_button": True,
    "use_edit_page_button": True,
    "use_download_button": True,
    "launch_buttons": {"colab_url": "https://colab.research.google.com"},
    "show_toc_level": 2,
    "home_page_in_toc": True,
    "navigation_with_keys": False,
    "navbar_persistent": [],  # the sidebar has the search field; no second one in a header bar
}


def _edit_path(app, pagename, templatename, context, doctree):
    """Point "edit this page" at the file in the repository: notebooks/ as they are, other pages in site/.

    Generated pages (API reference, results) have no source of their own there and get no edit button.
    """
    if pagename.startswith("notebooks/"):
        context["doc_path"] = ""
    elif pagename.startswith("api/") or pagename in ("results", "search", "genindex", "py-modindex"):
        context["theme_use_edit_page_button"] = False
    else:
        context["doc_path"] = "site"


def setup(app):
    app.connect("html-page-context", _edit_path)
