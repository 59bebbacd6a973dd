# mvke-tf: the two commands of the README are `make run` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup run run-multidomain test test-slow test-repeat lint bench lock clean

setup:  ## create .venv (Python 3.10) with the pinned stack; fast when up to date
	@bash scripts/setup.sh

run: setup  ## the main job: synthetic data, then the TFX pipeline (validate, transform, train, evaluate, push)
	@$(VENV)/bin/mvke-tf data synth --out runs/data --format tfrecord
	@$(VENV)/bin/mvke-tf pipeline run --config pipelines/configs/synthetic.yaml

run-multidomain: setup  ## M3oE through the pipeline: multi-domain data (3 domains), per-domain evaluation, push
	@$(VENV)/bin/mvke-tf data synth --multidomain --out runs/md-data --format tfrecord
	@$(VENV)/bin/mvke-tf pipeline run --config pipelines/configs/multidomain.yaml

test: setup  ## lint, then the default test suite (benchmarks excluded)
	@$(VENV)/bin/ruff check .
	@$(PY) -m pytest

test-slow: setup  ## the heaviest end-to-end tests, left out of `make test`; one at a time (two of them start worker processes)
	@$(PY) -m pytest -m slow -n 0

# The flake hunt (scripts/test_repeat.py): each training-heavy test file RUNS times, the default suite SUITE
# times and the slow tests SLOW times, every run a fresh process, two at a time; a table of what failed.
RUNS ?= 10
SUITE ?= 0
SLOW ?= 0
FILES ?=

test-repeat: setup  ## run tests again and again in fresh processes and count failures (RUNS=10 SUITE=0 SLOW=0 FILES=)
	@$(PY) scripts/test_repeat.py --runs $(RUNS) --suite $(SUITE) --slow $(SLOW) $(FILES)

lint: setup
	@$(VENV)/bin/ruff check .

# The census-income benchmark needs the UCI files (census-income.test.gz, ...): make bench CENSUS_DIR=DIR
CENSUS_DIR ?=

bench: test-slow  ## heavier checks and benchmarks (writes figures to docs/benchmarks.md)
	@$(PY) -m benchmarks.first_fit
	@$(PY) -m benchmarks.models --rows 400000 --seeds 3
	@$(PY) -m benchmarks.gate_routing --rows 400000 --seeds 3
	@$(PY) -m benchmarks.learning_curves --max-minutes 40
	@$(PY) -m benchmarks.task_correlation
	@$(PY) -m benchmarks.multidomain_lineup --rows 100000 --seeds 3 --epochs 3
	@$(PY) -m benchmarks.multidomain_grid
	@$(PY) -m benchmarks.tagging
	@$(PY) -m benchmarks.serving_latency
	@if [ -n "$(CENSUS_DIR)" ]; then $(PY) -m benchmarks.census --data "$(CENSUS_DIR)" --seeds 5; \
	else echo "bench: skipping census-income (set CENSUS_DIR to the directory with the UCI files)"; fi
	@$(PY) -m benchmarks.pipeline --rows 100000 1000000 4000000

lock:  ## re-resolve requirements/lock.txt from setup.py in a scratch venv (needs network)
	@bash scripts/lock.sh

clean:
	rm -rf runs .pytest_cache .ruff_cache build *.egg-info
