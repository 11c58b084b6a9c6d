# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: demo test bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

demo: $(VENV)/.installed
	$(VENV)/bin/unicorpus demo --out demo-out --overwrite

test: $(VENV)/.installed
	$(VENV)/bin/ruff check schemas pipelines cli tests benchmarks
	$(PY) -m pytest -q

bench: $(VENV)/.installed
	$(PY) -m benchmarks.ingest

clean:
	rm -rf demo-out .pytest_cache
