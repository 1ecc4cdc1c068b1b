# The G-Loss course: two commands on a fresh machine.
#   make course   install, then execute every notebook with papermill into outputs/course/
#   make test     install, then run the tests (every notebook with smoke parameters included)
# Both create .venv/ and install the pinned packages (torch 2.13.0 CPU) in one pip command.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python

.PHONY: install course test clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet --editable ".[test]"
	touch $@

course: install
	HF_HUB_DISABLE_PROGRESS_BARS=1 $(PY) -m gloss_lite.course --output outputs/course

test: install
	HF_HUB_DISABLE_PROGRESS_BARS=1 $(PY) -m pytest

clean:
	rm -rf outputs .pytest_cache
