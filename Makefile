# vecdex: the targets a newcomer can guess.
PY      ?= python3
VENV    := .venv
VPY     := $(VENV)/bin/python
STAMP   := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: setup demo test test-all check bench clean proto

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(VPY) || $(PY) -m venv $(VENV)
	$(VPY) -m pip install --quiet --upgrade pip
	# torch first, pinned, when missing: a bare `torch` requirement would pull a multi-GB CUDA build.
	$(VPY) -c "import torch" 2>/dev/null || $(VPY) -m pip install --quiet torch==2.13.0
	$(VPY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

# Both halves share one data directory: the server serves the collection `vecdex demo` built.
demo: setup
	@data=$$(mktemp -d "$${TMPDIR:-/tmp}/vecdex-demo-XXXXXX"); \
	$(VENV)/bin/vecdex demo --data "$$data" && $(VPY) -m server.demo --data "$$data"; \
	rc=$$?; rm -rf "$$data"; exit $$rc

proto: setup
	$(VPY) server/protogen.py

test: setup
	$(VPY) -m pytest -q

test-all: setup
	$(VPY) -m pytest -q -m "slow or not slow"

check: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

bench: setup
	$(VPY) -m pip install --quiet -e ".[dev,bench]"
	$(VPY) -m bench.ann

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
