# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: demo test bench bench-download clean

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
	$(PY) -m benchmarks.dedup

# img2dataset has pins of its own: it gets its own virtual environment.
bench-download: $(VENV)/.installed
	test -x .bench-i2d/bin/python || ($(PYTHON) -m venv .bench-i2d && .bench-i2d/bin/pip install -q img2dataset)
	$(PY) -m benchmarks.download --img2dataset-python .bench-i2d/bin/python

clean:
	rm -rf demo-out .pytest_cache
