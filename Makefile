# Two commands for a fresh machine (README): `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.clumpcat-installed
CORES  ?= all
# The workflow's rules call the `clumpcat` command: put the venv first on PATH.
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: run test test-slurm report lint dry-run clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

## Set up and run the default pipeline (synthetic survey, trained model, catalogue, report).
run: $(STAMP)
	$(BIN)/snakemake --cores $(CORES)
	$(BIN)/snakemake --cores $(CORES) --report results/report.html

## Set up and run the test suite.
test: $(STAMP)
	$(BIN)/python -m pytest -n 2 --dist loadgroup

## Install and start a single-node Slurm cluster (Debian/Ubuntu, root or sudo), then run the
## tests marked `slurm` against it: the workflow through `snakemake --profile slurm` (docs/slurm.md).
test-slurm: $(STAMP)
	$(if $(filter 0,$(shell id -u)),,sudo) .ci/slurm-setup.sh
	CLUMPCAT_REQUIRE_SLURM=1 $(BIN)/python -m pytest -m slurm -p no:xdist

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/snakemake --lint

dry-run: $(STAMP)
	$(BIN)/snakemake -n --cores $(CORES)

clean:
	rm -rf results .snakemake
