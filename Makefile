# The G-Loss course: two commands on a fresh machine (make course, make test); make site after make course.
#   make course   install, then execute every notebook with papermill into outputs/course/
#   make test     install, then run the tests (every notebook with smoke parameters included)
#   make site     install, then build the website from what `make course` wrote, into outputs/site/
# Each creates .venv/ and install the packages pinned in constraints.txt (torch 2.13.0 CPU), the notebook tools (the
# `course` extra), the test tools, the website tools (`site`) and sentence-transformers with the
# Trainer's needs (`integrations`) in one pip command.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# torch's CPU wheel, pinned in the same pip command as everything that depends on torch
TORCH  := torch==2.13.0

.PHONY: install course test site student handout lint clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet --constraint constraints.txt --editable ".[course,test,site,integrations]" "$(TORCH)"
	touch $@

course: install
	HF_HUB_DISABLE_PROGRESS_BARS=1 $(PY) -m gloss_lite.course --output outputs/course

test: install
	HF_HUB_DISABLE_PROGRESS_BARS=1 $(PY) -m pytest

site: install
	$(PY) -m gloss_lite.course.site --notebooks outputs/course --output outputs/site

student: install
	$(PY) -m gloss_lite.course.classroom student --output student

# what a class gets: the student copies and the student build of the website (after make course)
handout: install
	$(PY) -m gloss_lite.course.handout --notebooks outputs/course --output handout

lint: install
	$(PY) -m ruff check .
	$(PY) -m mypy
	$(VENV)/bin/nbstripout --verify --keep-id notebooks/*.ipynb
	$(PY) -m gloss_lite.course.classroom colab --check

clean:
	rm -rf outputs .pytest_cache
