# mvke-tf: the two commands of the README are `make run` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup run test lint bench lock clean

setup:  ## create .venv (Python 3.10) with the pinned stack; fast when up to date
	@bash scripts/setup.sh

run: setup  ## the main job on the embedded synthetic default: prints per-task AUC and the oracle AUC
	@$(VENV)/bin/mvke-tf demo

test: setup  ## lint, then the default test suite (benchmarks excluded)
	@$(VENV)/bin/ruff check .
	@$(PY) -m pytest

lint: setup
	@$(VENV)/bin/ruff check .

bench: setup  ## heavier checks and benchmarks (writes figures to docs/benchmarks.md)
	@$(PY) -m benchmarks.models --rows 400000 --seeds 3

lock:  ## re-resolve requirements/lock.txt from setup.py in a scratch venv (needs network)
	@bash scripts/lock.sh

clean:
	rm -rf runs .pytest_cache .ruff_cache build *.egg-info
