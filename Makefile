# vgcore: `make demo` and `make test` work as the first commands on a fresh clone.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.vgcore-installed
EXTRAS ?= dev,offline,workflow

JOBS   ?= all
PROFILE ?= smoke
# optional subsets for demo/paper/figures, e.g. make demo LOSSES="triplet scl" SEEDS=0
SELECT := $(if $(DATASETS),--datasets $(DATASETS)) $(if $(LOSSES),--losses $(LOSSES)) $(if $(SEEDS),--seeds $(SEEDS))

.PHONY: help setup test lint demo schedule paper figures sync-notebooks lab data bench mutate clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

# The venv is rebuilt only when pyproject.toml changes (the stamp records the last install).
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[$(EXTRAS)]'
	touch $@

setup: $(STAMP)  ## create .venv and install vgcore with its dev, offline and workflow extras

test: $(STAMP)  ## unit tests and nbval on the notebooks (smoke profile)
	$(BIN)/python -m pytest

lint: $(STAMP)  ## ruff on the package, tests, benchmarks and notebooks
	$(BIN)/ruff check vgcore tests benchmarks notebooks workflow

demo: $(STAMP) data  ## notebook build, demo profile (FashionMNIST + EfficientNet-Lite0, synthetic fine-grained) -> figures/demo
	$(BIN)/python -m vgcore demo -j $(JOBS) $(SELECT)

schedule: $(STAMP) data  ## notebook build, paper_schedule profile (the paper's lr 1e-4 / 100 epochs on the demo's FashionMNIST) -> figures/paper_schedule
	$(BIN)/python -m vgcore figures --profile paper_schedule -j $(JOBS) $(SELECT)

paper: $(STAMP)  ## notebook build, paper profile (ViT-B/32, five datasets; needs internet, a GPU helps) -> figures/paper
	$(BIN)/python -m vgcore paper -j $(JOBS) $(SELECT)

figures: $(STAMP)  ## notebook build of any profile: make figures PROFILE=smoke -> figures/<profile>
	$(BIN)/python -m vgcore figures --profile $(PROFILE) -j $(JOBS) $(SELECT)

sync-notebooks: $(STAMP)  ## sync each notebooks/*.py with its paired .ipynb (the newer one wins)
	$(BIN)/jupytext --sync notebooks/*.py

# JupyterLab serves the whole repository (README, figures/, PROTOCOL.md) and opens on notebooks/.
# jupytext's server extension (enabled by its pip install) pairs each .ipynb with its .py: saving
# either in JupyterLab rewrites both, and a .py opens as a notebook (right-click > Open With).
LAB_PORT ?= 8888
lab: $(STAMP)  ## JupyterLab on the notebooks, jupytext pairing on (LAB_PORT=8888)
	$(BIN)/jupyter lab --ServerApp.ip=127.0.0.1 --ServerApp.port=$(LAB_PORT) \
	  --ServerApp.root_dir="$(CURDIR)" --LabApp.default_url=/lab/tree/notebooks

data:  ## make the offline FashionMNIST available (Debian package dataset-fashion-mnist)
	@if [ -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then \
	  echo "FashionMNIST found in /usr/share/datasets/fashion-mnist"; \
	elif command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	  apt-get install -y dataset-fashion-mnist || { apt-get update && apt-get install -y dataset-fashion-mnist; }; \
	else \
	  echo "FashionMNIST is not installed. Either run (as root, on Debian/Ubuntu) 'apt-get install dataset-fashion-mnist',"; \
	  echo "or put the four *-ubyte.gz files in data/fashionmnist/, or let vgcore download them (needs internet)."; \
	fi

# `make bench` runs every benchmark; `make bench BENCH=losses` runs benchmarks/bench_losses.py only.
BENCH ?= *
bench: $(STAMP)  ## benchmarks in benchmarks/ (printed, and written to benchmarks/out/); BENCH=losses for one
	@set -e; for b in benchmarks/bench_$(BENCH).py; do echo "== $$b"; $(BIN)/python $$b; done

# Mutation testing of the core (not part of `make test`: about an hour on 2 cores). mutmut mutates
# the modules of [tool.mutmut] in pyproject.toml in a copy under mutants/ and runs, for each mutant,
# only the selected tests that call the mutated function. It keeps its results in mutants/ and
# retests only what changed; MUTATE_FRESH=1 starts over. One torch thread per worker: a process
# forked after OpenMP ran can hang in the child. Score and survivors: benchmarks/out/mutation_*.
MUTATE_JOBS ?= 2
mutate: $(STAMP)  ## mutation testing of losses, metrics, results, claims (slow) -> benchmarks/out/mutation_*
	$(if $(MUTATE_FRESH),rm -rf mutants)
	OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $(BIN)/mutmut run --max-children $(MUTATE_JOBS)
	$(BIN)/python benchmarks/mutation_report.py

clean:  ## remove caches, run results and the venv
	rm -rf $(VENV) .pytest_cache .ruff_cache .snakemake cache results artifacts benchmarks/out mutants
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
