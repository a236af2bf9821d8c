# Two commands on a fresh machine with only python3 and make:
#   make demo   create .venv, install the project, load a workflow from the built-in sandbox
#   make test   create .venv with the dev extras (test, lint, docs), lint (ruff, mypy
#               --strict, the import contracts), build the docs strictly, run the suite
#               (pandas 3), then the pandas 2.2 run in .venv-pandas22 (test extras only)
#   make docs   build the docs site into site/ (MkDocs, Material, mkdocstrings; --strict)
PYTHON ?= python3
VENV := .venv
VENV22 := .venv-pandas22
VENVBENCH := .venv-bench
PIP_FLAGS := --quiet --disable-pip-version-check

.PHONY: demo test lint docs test-main test-pandas22 bench clean

demo: $(VENV)/.installed
	$(VENV)/bin/eachlabs-loader demo

# The two venvs are built side by side (pip is mostly single-threaded and waits on the disk),
# then the checks and the two runs go one after another: each run uses both cores.
test:
	$(MAKE) -j2 $(VENV)/.installed-dev $(VENV22)/.installed
	$(MAKE) -j1 lint docs test-main test-pandas22

lint: $(VENV)/.installed-dev
	$(VENV)/bin/ruff check eachlabs_loader tests benchmarks
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports --no-cache

docs: $(VENV)/.installed-dev
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --site-dir site

# The suite starts the CLI in many subprocesses; with PYTHONDONTWRITEBYTECODE set (as on CI)
# each would compile the package from source, so compile it once first.
test-main: $(VENV)/.installed-dev
	$(VENV)/bin/python -m compileall -q eachlabs_loader
	$(VENV)/bin/python -m pytest -n 2

# The suite again on the oldest pandas we support, minus the slow end-to-end files whose
# pandas use is already covered (subprocess CLI runs, SIGKILL runs, the fault matrix, the
# notebooks, the third-party servers, the docs' examples): they run once, on pandas 3, above.
test-pandas22: $(VENV22)/.installed
	$(VENV22)/bin/python -m pytest -q -n 2 -p no:cacheprovider \
		--ignore=tests/integration/test_cli.py --ignore=tests/integration/test_crash.py \
		--ignore=tests/integration/test_faults.py --ignore=tests/test_notebook.py \
		--ignore=tests/integration/test_real_servers.py --ignore=tests/test_docs.py

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install $(PIP_FLAGS) --upgrade pip

$(VENV)/.installed: pyproject.toml $(VENV)/bin/python
	$(VENV)/bin/python -m pip install $(PIP_FLAGS) -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml $(VENV)/bin/python
	$(VENV)/bin/python -m pip install $(PIP_FLAGS) -e '.[dev]'
	touch $@ $(VENV)/.installed

$(VENV22)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV22)
	$(VENV22)/bin/python -m pip install $(PIP_FLAGS) --upgrade pip
	$(VENV22)/bin/python -m pip install $(PIP_FLAGS) -e '.[test]' 'pandas>=2.2,<2.3'
	touch $@

# Benchmarks are not tests: they take minutes and print tables for BENCHMARKS.md. They run in
# their own venv, with dlt installed as the peer to compare with.
bench: $(VENVBENCH)/.installed
	$(VENVBENCH)/bin/python benchmarks/peers.py --scenarios cpu latency inserts cpu-mixed
	$(VENVBENCH)/bin/python benchmarks/peers.py --scenarios org org-lake long-tail lake-100k lake-1m
	$(VENVBENCH)/bin/python benchmarks/floor.py --repeat 5
	$(VENVBENCH)/bin/python benchmarks/lake_memory.py --rows 100000 1000000
	$(VENVBENCH)/bin/python benchmarks/delta.py --rows 100000 1000000

$(VENVBENCH)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENVBENCH)
	$(VENVBENCH)/bin/python -m pip install $(PIP_FLAGS) --upgrade pip
	$(VENVBENCH)/bin/python -m pip install $(PIP_FLAGS) -e '.[bench]'
	touch $@

clean:
	rm -rf $(VENV) $(VENV22) $(VENVBENCH) demo-lake site .pytest_cache
